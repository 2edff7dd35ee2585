// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The model-specific registers a freshly created vCPU gets.

use kvm_bindings::{kvm_msr_entry, Msrs};
use kvm_ioctls::VcpuFd;

use crate::Error;

const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// IA32_MISC_ENABLE bit 0: fast string operations.
const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRRs enabled (bit 11) with write-back (6) as the default memory type.
const MTRR_ENABLED_WRITEBACK: u64 = (1 << 11) | 6;

/// The MSRs and the values every vCPU starts with, as a kernel expects them at boot:
/// the time-stamp counter at 0, system-call entry points cleared, fast strings on, and
/// write-back as the default memory type.
fn boot_msrs() -> [(u32, u64); 11] {
    [
        (MSR_IA32_TSC, 0),
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLED_WRITEBACK),
    ]
}

pub(crate) fn configure(fd: &VcpuFd) -> Result<(), Error> {
    let wanted = boot_msrs();
    let entries: Vec<kvm_msr_entry> = wanted
        .iter()
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    // Eleven entries always fit the MSR list's capacity.
    let msrs = Msrs::from_entries(&entries).map_err(|_| Error::MsrRejected {
        set: 0,
        wanted: wanted.len(),
        first_rejected: wanted[0].0,
    })?;
    let set = fd.set_msrs(&msrs).map_err(Error::kvm("KVM_SET_MSRS"))?;
    if set != wanted.len() {
        return Err(Error::MsrRejected {
            set,
            wanted: wanted.len(),
            first_rejected: wanted[set].0,
        });
    }
    Ok(())
}
