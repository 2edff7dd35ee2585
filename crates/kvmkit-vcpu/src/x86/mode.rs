// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Putting a vCPU into 16-bit real mode, 32-bit flat protected mode or 64-bit long mode
//! with identity-mapped paging, with the descriptor and page tables it needs written
//! into guest memory.

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemory};

pub use kvmkit_memory::x86::CpuMode;
use kvmkit_memory::x86::{GDT, IDT, PAGE_TABLES};

use crate::Error;

/// Bytes identity-mapped by the long-mode page tables (4 GiB in 2 MiB pages), so code
/// can reach RAM and the 32-bit MMIO hole alike.
pub const IDENTITY_MAPPED_BYTES: u64 = 4 << 30;

const PAGE_SIZE: u64 = 0x1000;
const PML4_ADDR: u64 = PAGE_TABLES.start;
const PDPT_ADDR: u64 = PAGE_TABLES.start + PAGE_SIZE;
const PD_ADDR: u64 = PAGE_TABLES.start + 2 * PAGE_SIZE;
const PD_COUNT: u64 = IDENTITY_MAPPED_BYTES >> 30;
// The PML4, the PDPT and the page directories fill the map's page-table range.
const _: () = assert!(PD_ADDR + PD_COUNT * PAGE_SIZE == PAGE_TABLES.end());

const CODE_SELECTOR: u16 = 0x08;
const DATA_SELECTOR: u16 = 0x10;

const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

const PTE_PRESENT: u64 = 1 << 0;
const PTE_WRITABLE: u64 = 1 << 1;
const PTE_HUGE: u64 = 1 << 7;

/// RFLAGS bit 1 is reserved and always set.
const RFLAGS_RESERVED: u64 = 1 << 1;

/// Sets the segment, control and general registers of `fd` for `mode`, writing the
/// GDT and page tables the mode needs into `memory`: what [`Vcpu::enter_mode`] does,
/// for a vCPU file descriptor a VMM drives itself (such as a benchmark's baseline).
///
/// [`Vcpu::enter_mode`]: crate::Vcpu::enter_mode
pub fn enter<M: GuestMemory + ?Sized>(
    fd: &VcpuFd,
    memory: &M,
    mode: CpuMode,
    entry: u64,
    stack_top: u64,
) -> Result<(), Error> {
    let mut sregs = fd.get_sregs().map_err(Error::kvm("KVM_GET_SREGS"))?;
    let mut regs = kvm_regs {
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    };
    match mode {
        CpuMode::Real => real_mode(&mut sregs, &mut regs, entry, stack_top)?,
        CpuMode::Protected => {
            check_reach(mode, entry, 1 << 32)?;
            check_reach(mode, stack_top, 1 << 32)?;
            write_tables(memory, mode)?;
            flat_segments(&mut sregs, false);
            sregs.cr0 = CR0_PE | CR0_ET;
            regs.rip = entry;
            regs.rsp = stack_top;
        }
        CpuMode::Long => {
            check_reach(mode, entry, IDENTITY_MAPPED_BYTES)?;
            check_reach(mode, stack_top, IDENTITY_MAPPED_BYTES + 1)?;
            write_tables(memory, mode)?;
            flat_segments(&mut sregs, true);
            sregs.cr3 = PML4_ADDR;
            sregs.cr4 = CR4_PAE;
            sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
            sregs.efer = EFER_LME | EFER_LMA;
            regs.rip = entry;
            regs.rsp = stack_top;
        }
    }
    fd.set_sregs(&sregs).map_err(Error::kvm("KVM_SET_SREGS"))?;
    fd.set_regs(&regs).map_err(Error::kvm("KVM_SET_REGS"))
}

/// Writes into `memory` the tables a vCPU entered in `mode` uses (the GDT and IDT, and
/// for long mode the identity-mapping page tables), as [`enter`] does: what a reboot
/// in place writes again, since the guest may have used that memory since.
pub fn write_tables<M: GuestMemory + ?Sized>(memory: &M, mode: CpuMode) -> Result<(), Error> {
    match mode {
        CpuMode::Real => Ok(()),
        CpuMode::Protected => write_gdt(memory, &[0, GDT_CODE32, GDT_DATA]),
        CpuMode::Long => {
            write_gdt(memory, &[0, GDT_CODE64, GDT_DATA])?;
            write_page_tables(memory)
        }
    }
}

fn check_reach(mode: CpuMode, addr: u64, limit: u64) -> Result<(), Error> {
    if addr >= limit {
        return Err(Error::EntryOutOfReach { mode, entry: addr });
    }
    Ok(())
}

/// Real mode: CS is based at the 64 KiB-aligned segment holding the entry point, the
/// other segments at 0, so the stack must lie in the first 64 KiB.
fn real_mode(
    sregs: &mut kvm_sregs,
    regs: &mut kvm_regs,
    entry: u64,
    stack_top: u64,
) -> Result<(), Error> {
    check_reach(CpuMode::Real, entry, 1 << 20)?;
    check_reach(CpuMode::Real, stack_top, 1 << 16)?;
    let code_base = entry & !0xffff;
    sregs.cs = real_segment(code_base, 0x9b);
    for segment in [
        &mut sregs.ds,
        &mut sregs.es,
        &mut sregs.fs,
        &mut sregs.gs,
        &mut sregs.ss,
    ] {
        *segment = real_segment(0, 0x93);
    }
    sregs.cr0 &= !(CR0_PE | CR0_PG);
    sregs.efer = 0;
    regs.rip = entry - code_base;
    regs.rsp = stack_top;
    Ok(())
}

fn real_segment(base: u64, type_and_flags: u8) -> kvm_segment {
    kvm_segment {
        base,
        limit: 0xffff,
        // Real mode reaches 1 MiB: the segment base was checked below it.
        selector: ((base >> 4) & 0xffff) as u16,
        type_: type_and_flags & 0xf,
        present: 1,
        s: 1,
        ..Default::default()
    }
}

// Flat descriptors: base 0, limit 0xfffff in 4 KiB granules.
const GDT_CODE32: u64 = 0x00cf_9b00_0000_ffff;
const GDT_CODE64: u64 = 0x00af_9b00_0000_ffff;
const GDT_DATA: u64 = 0x00cf_9300_0000_ffff;

fn flat_segments(sregs: &mut kvm_sregs, long: bool) {
    let code = kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: CODE_SELECTOR,
        type_: 0xb,
        present: 1,
        dpl: 0,
        db: u8::from(!long),
        s: 1,
        l: u8::from(long),
        g: 1,
        ..Default::default()
    };
    let data = kvm_segment {
        selector: DATA_SELECTOR,
        type_: 0x3,
        db: 1,
        l: 0,
        ..code
    };
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.gdt.base = GDT.start;
    sregs.gdt.limit = 3 * 8 - 1;
    sregs.idt.base = IDT.start;
    sregs.idt.limit = 0;
}

fn write_gdt<M: GuestMemory + ?Sized>(memory: &M, entries: &[u64]) -> Result<(), Error> {
    for (index, entry) in entries.iter().enumerate() {
        let addr = GDT.start + 8 * index as u64;
        write_guest(memory, "GDT", addr, *entry)?;
    }
    write_guest(memory, "IDT", IDT.start, 0u64)
}

/// PML4[0] -> PDPT; PDPT[i] -> PD i; PD i maps 1 GiB in 2 MiB pages.
fn write_page_tables<M: GuestMemory + ?Sized>(memory: &M) -> Result<(), Error> {
    let table_flags = PTE_PRESENT | PTE_WRITABLE;
    write_guest(memory, "PML4", PML4_ADDR, PDPT_ADDR | table_flags)?;
    for pd in 0..PD_COUNT {
        let pd_addr = PD_ADDR + pd * PAGE_SIZE;
        write_guest(memory, "PDPT", PDPT_ADDR + 8 * pd, pd_addr | table_flags)?;
        let mut entries = [0u64; 512];
        for (index, entry) in entries.iter_mut().enumerate() {
            let phys = ((pd << 9) + index as u64) << 21;
            *entry = phys | table_flags | PTE_HUGE;
        }
        let bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
        memory
            .write_slice(&bytes, GuestAddress(pd_addr))
            .map_err(|e| memory_error("page directory", pd_addr, e))?;
    }
    Ok(())
}

fn write_guest<M: GuestMemory + ?Sized>(
    memory: &M,
    what: &'static str,
    addr: u64,
    value: u64,
) -> Result<(), Error> {
    memory
        .write_obj(value, GuestAddress(addr))
        .map_err(|e| memory_error(what, addr, e))
}

fn memory_error(what: &'static str, addr: u64, source: vm_memory::GuestMemoryError) -> Error {
    Error::GuestMemory { what, addr, source }
}
