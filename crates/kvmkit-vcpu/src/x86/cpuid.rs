// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! CPUID as a guest sees it: what KVM supports on this host, with the vCPU's APIC id.

use kvm_bindings::CpuId;
use kvm_ioctls::VcpuFd;

use crate::Error;

const LEAF_FEATURES: u32 = 0x1;
const LEAF_EXTENDED_TOPOLOGY: u32 = 0xb;
const LEAF_EXTENDED_TOPOLOGY_V2: u32 = 0x1f;
/// CPUID.1:ECX bit 31 tells the guest it runs on a hypervisor.
const ECX_HYPERVISOR: u32 = 1 << 31;

/// Sets `supported` as the vCPU's CPUID, with the initial APIC id in leaf 1 and the
/// x2APIC id in the topology leaves set to `id`.
pub(crate) fn configure(fd: &VcpuFd, supported: &CpuId, id: u32) -> Result<(), Error> {
    let mut cpuid = supported.clone();
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            LEAF_FEATURES => {
                entry.ebx = (entry.ebx & 0x00ff_ffff) | ((id & 0xff) << 24);
                entry.ecx |= ECX_HYPERVISOR;
            }
            LEAF_EXTENDED_TOPOLOGY | LEAF_EXTENDED_TOPOLOGY_V2 => entry.edx = id,
            _ => {}
        }
    }
    fd.set_cpuid2(&cpuid).map_err(Error::kvm("KVM_SET_CPUID2"))
}
