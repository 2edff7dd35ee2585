// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Many VMs with identical memory, merged by KSM.
//!
//! Starts N VMs with `mergeable=on` memory whose guests fill their RAM with the same
//! content, turns KSM scanning on (as root; the old settings are restored at the end),
//! waits for merging to settle, and prints the host memory the VMs use before and after.
//!
//! ```text
//! cargo run --release --example ksm_density -- [--vms N] [--mib M]
//! ```
//! Last line: `ksm: vms=N guest_mib=M merged_pct=P saved_mib=S`, where `guest_mib` is
//! each VM's RAM, `merged_pct` the share of the VMs' resident pages KSM merged
//! (`ksm_merging_pages` of this process), and `saved_mib` the host memory KSM gave
//! back: the drop in distinct host page frames behind the VMs' RAM, counted from
//! `/proc/self/pagemap`.

use std::fs;
use std::process::ExitCode;

use clap::Parser;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvmkit::guest_asm::{asm::*, CpuMode, GuestProgram};
use kvmkit::memory::{KsmCounters, KsmScanning, MemoryConfig};
use kvmkit::vcpu::{IoHandler, VcpuExit, VcpuOutcome};
use kvmkit::{MachineBuilder, RunningMachine};

const LOAD_ADDR: u64 = 0x10_0000;
/// Guests fill RAM from here up, past their code, stacks and page tables.
const FILL_START: u64 = 0x20_0000;
const PAGE: u64 = PAGE_STEP as u64;
/// A page, as the instruction's immediate.
const PAGE_STEP: i32 = 4096;

/// Writes the same qword at the start of every page from FILL_START to `size`.
fn filler(size: u64) -> Result<GuestProgram, kvmkit::guest_asm::Error> {
    GuestProgram::assemble(CpuMode::Long, LOAD_ADDR, |a| {
        let mut next = a.create_label();
        a.mov(rdi, FILL_START)?;
        a.mov(rcx, (size - FILL_START) / PAGE)?;
        a.mov(rax, 0x6b76_6d6b_6974_2121u64)?;
        a.set_label(&mut next)?;
        a.mov(qword_ptr(rdi), rax)?;
        a.add(rdi, PAGE_STEP)?;
        a.dec(rcx)?;
        a.jnz(next)?;
        a.hlt()
    })
}

struct NoDevices;
impl IoHandler for NoDevices {}

/// N VMs with identical memory, merged by KSM.
#[derive(Debug, Parser)]
#[command(name = "ksm_density")]
struct Options {
    /// VMs to run side by side.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    vms: u32,
    /// Guest memory of each, in MiB.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(4..=3072))]
    mib: u64,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn resident(vms: &[RunningMachine]) -> Result<u64, kvmkit::memory::Error> {
    vms.iter()
        .map(|vm| vm.ram().report().map(|r| r.resident()))
        .sum()
}

fn run(options: &Options) -> Result<(), Box<dyn std::error::Error>> {
    let size = options.mib << 20;
    let program = filler(size)?;
    let config: MemoryConfig = format!("size={}M,mergeable=on", options.mib).parse()?;
    let mut vms = Vec::new();
    for _ in 0..options.vms {
        let machine = MachineBuilder::new()
            .memory_config(config.clone())
            .build()?;
        vms.push(machine.boot(&program)?.start(Arc::new(NoDevices))?);
    }
    // Wait for every guest to finish filling, keeping the VMs (and their memory).
    let deadline = Instant::now() + Duration::from_secs(300);
    while vms.iter().any(|vm| !vm.vcpus()[0].is_finished()) {
        if Instant::now() > deadline {
            return Err("the guests did not finish filling their memory in 300 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for vm in &vms {
        let outcome = vm.vcpus()[0].exit_counts();
        if outcome.get(kvmkit::vcpu::ExitReason::Hlt) != 1 {
            return Err(format!("a guest did not halt: exits {outcome}").into());
        }
    }
    let before = resident(&vms)?;
    println!(
        "before: vms={} resident_mib={:.1} (guest RAM the host backs, all VMs)",
        options.vms,
        mib(before)
    );

    let frames_before = distinct_frames(&vms)?;
    let start = KsmCounters::read().ok_or("this kernel has no KSM")?;
    let scan = KsmScanning::start()?;
    let counters = wait_for_merging(before / PAGE);
    drop(scan);
    let merged_pages = counters.process_merging_pages.unwrap_or(0);
    // After merging, many guest pages map the same host page: count each once.
    let frames_after = distinct_frames(&vms)?;
    let after = frames_after * PAGE;
    let saved = (frames_before * PAGE).saturating_sub(after);
    println!(
        "after: vms={} host_mib={:.1} (distinct host pages behind all VMs' RAM) merged_pages={} full_scans={}",
        options.vms,
        mib(after),
        merged_pages,
        counters.full_scans - start.full_scans
    );
    println!(
        "ksm: vms={} guest_mib={} merged_pct={:.1} saved_mib={:.1}",
        options.vms,
        options.mib,
        100.0 * merged_pages as f64 / (before / PAGE) as f64,
        mib(saved)
    );
    teardown(vms)
}

/// Tears the VMs down, half of them as kvmkit does (unmapping merged memory directly)
/// and half with `MADV_UNMERGEABLE` first (as kvmkit did before 0.2, which copies every
/// merged page back out just before it is freed), and prints both times per VM:
/// `teardown: vms=N direct_ms=D unmerge_first_ms=U` (per VM, medians).
fn teardown(vms: Vec<RunningMachine>) -> Result<(), Box<dyn std::error::Error>> {
    let mut direct = Vec::new();
    let mut unmerge_first = Vec::new();
    for (index, vm) in vms.into_iter().enumerate() {
        let start = Instant::now();
        if index % 2 == 1 {
            for region in vm.ram().regions() {
                // SAFETY: the range is one live guest RAM mapping of `vm`; the advice
                // changes KSM's bookkeeping, never the memory's contents.
                unsafe {
                    libc::madvise(
                        region.host_addr as *mut libc::c_void,
                        usize::try_from(region.spec.size).unwrap_or(usize::MAX),
                        libc::MADV_UNMERGEABLE,
                    )
                };
            }
        }
        let outcome = vm.wait()?;
        let elapsed = start.elapsed().as_secs_f64() * 1000.0;
        if outcome != [VcpuOutcome::Exited(VcpuExit::Hlt)] {
            return Err(format!("a VM ended with {outcome:?}").into());
        }
        if index % 2 == 1 {
            unmerge_first.push(elapsed);
        } else {
            direct.push(elapsed);
        }
    }
    println!(
        "teardown: vms={} direct_ms={:.1} unmerge_first_ms={:.1}",
        direct.len() + unmerge_first.len(),
        median(&mut direct),
        median(&mut unmerge_first)
    );
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// The number of distinct host page frames behind the VMs' resident guest RAM, from
/// `/proc/self/pagemap` (which shows frame numbers to root only).
fn distinct_frames(vms: &[RunningMachine]) -> Result<u64, Box<dyn std::error::Error>> {
    use std::io::{Read, Seek, SeekFrom};
    const PRESENT: u64 = 1 << 63;
    const PFN_MASK: u64 = (1 << 55) - 1;
    let mut pagemap = fs::File::open("/proc/self/pagemap")?;
    let mut frames = std::collections::HashSet::new();
    let mut present = 0u64;
    for vm in vms {
        for region in vm.ram().regions() {
            let pages = (region.spec.size / PAGE) as usize;
            let mut entries = vec![0u8; pages * 8];
            pagemap.seek(SeekFrom::Start(region.host_addr as u64 / PAGE * 8))?;
            pagemap.read_exact(&mut entries)?;
            for entry in entries.chunks_exact(8) {
                let entry = u64::from_le_bytes(entry.try_into()?);
                if entry & PRESENT != 0 {
                    present += 1;
                    frames.insert(entry & PFN_MASK);
                }
            }
        }
    }
    if present > 0 && frames.len() == 1 && frames.contains(&0) {
        return Err("reading host frame numbers from /proc/self/pagemap needs root".into());
    }
    Ok(frames.len() as u64)
}

/// Waits until KSM has merged something and the merged pages stopped growing for two
/// full scans, or every page is merged, or a minute passed.
fn wait_for_merging(pages: u64) -> KsmCounters {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = KsmCounters::read().unwrap_or_default();
    let mut stable_since_scan = last.full_scans;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = KsmCounters::read().unwrap_or_default();
        if now.process_merging_pages != last.process_merging_pages {
            stable_since_scan = now.full_scans;
        }
        let merged_some = now.process_merging_pages.unwrap_or(0) > 0;
        let settled = merged_some && now.full_scans >= stable_since_scan + 2;
        let all = now.process_merging_pages.unwrap_or(0) >= pages;
        last = now;
        if settled || all || Instant::now() > deadline {
            return last;
        }
    }
}

fn main() -> ExitCode {
    let options = Options::parse();
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ksm_density: {}", kvmkit::Causes(&*error));
            ExitCode::FAILURE
        }
    }
}
