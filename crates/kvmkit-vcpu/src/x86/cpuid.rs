// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! CPUID as a guest sees it: what KVM supports on this host (its paravirtual leaves,
//! kvm-clock among them, included), with the topology of the VM instead of the host's.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};
use kvm_ioctls::VcpuFd;

use crate::Error;

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMETERS: u32 = 0x4;
const LEAF_EXTENDED_TOPOLOGY: u32 = 0xb;
const LEAF_EXTENDED_TOPOLOGY_V2: u32 = 0x1f;
const LEAF_AMD_FEATURES: u32 = 0x8000_0001;
const LEAF_AMD_SIZES: u32 = 0x8000_0008;
const LEAF_AMD_CACHE_TOPOLOGY: u32 = 0x8000_001d;
const LEAF_AMD_TOPOLOGY: u32 = 0x8000_001e;
/// CPUID.1:ECX bit 31 tells the guest it runs on a hypervisor.
const ECX_HYPERVISOR: u32 = 1 << 31;
/// CPUID.1:ECX bit 24: the local APIC has the TSC-deadline timer mode.
const ECX_TSC_DEADLINE: u32 = 1 << 24;
/// CPUID.1:EDX bit 28: the package has more than one logical processor.
const EDX_HTT: u32 = 1 << 28;
/// CPUID.80000001h:ECX bit 1: legacy multi-core (CmpLegacy).
const ECX_CMP_LEGACY: u32 = 1 << 1;
/// Topology level types in leaves 0xb and 0x1f.
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// The CPU topology a VM's vCPUs report: `vcpus` cores of one thread each, in one
/// package, APIC id = vCPU index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTopology {
    /// vCPUs in the VM.
    pub vcpus: u32,
}

impl CpuTopology {
    /// A package of `vcpus` single-threaded cores.
    pub fn new(vcpus: u32) -> Self {
        CpuTopology {
            vcpus: vcpus.max(1),
        }
    }

    /// Bits of the APIC id that number the cores.
    fn core_bits(&self) -> u32 {
        u32::BITS - (self.vcpus - 1).leading_zeros()
    }
}

/// Sets `supported` as vCPU `id`'s CPUID, shaped by [`shape`].
pub(crate) fn configure(
    fd: &VcpuFd,
    supported: &CpuId,
    id: u32,
    topology: CpuTopology,
) -> Result<(), Error> {
    let mut cpuid = supported.clone();
    shape(cpuid.as_mut_slice(), id, topology);
    fd.set_cpuid2(&cpuid).map_err(Error::kvm("KVM_SET_CPUID2"))
}

/// Rewrites the leaves that describe the topology, so none of the host's shows
/// through: the APIC id (leaf 1, 0xb, 0x1f, 0x8000001e), the logical processor count
/// (leaf 1), the cores per package (leaf 4, 0x80000008), the threads sharing each cache
/// (leaf 4, 0x8000001d) and the topology levels (0xb, 0x1f: one thread per core,
/// `topology.vcpus` cores); and sets the hypervisor bit.
pub fn shape(entries: &mut [kvm_cpuid_entry2], id: u32, topology: CpuTopology) {
    let cores = topology.vcpus;
    for entry in entries {
        match entry.function {
            LEAF_FEATURES => {
                entry.ebx =
                    (entry.ebx & 0x0000_ffff) | ((id & 0xff) << 24) | ((cores & 0xff) << 16);
                entry.ecx |= ECX_HYPERVISOR;
                if cores > 1 {
                    entry.edx |= EDX_HTT;
                } else {
                    entry.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE_PARAMETERS => {
                // Cores per package - 1 in bits 31:26, and the threads sharing the cache.
                entry.eax = cache_sharing(entry.eax, cores) | (((cores - 1) & 0x3f) << 26);
            }
            LEAF_AMD_CACHE_TOPOLOGY => entry.eax = cache_sharing(entry.eax, cores),
            LEAF_EXTENDED_TOPOLOGY | LEAF_EXTENDED_TOPOLOGY_V2 => {
                topology_level(entry, id, topology);
            }
            LEAF_AMD_FEATURES => {
                if cores > 1 {
                    entry.ecx |= ECX_CMP_LEGACY;
                } else {
                    entry.ecx &= !ECX_CMP_LEGACY;
                }
            }
            LEAF_AMD_SIZES => {
                // ApicIdSize in bits 15:12, cores - 1 in bits 7:0.
                entry.ecx =
                    (entry.ecx & !0xf0ff) | (topology.core_bits() << 12) | ((cores - 1) & 0xff);
            }
            LEAF_AMD_TOPOLOGY => {
                entry.eax = id;
                entry.ebx = id & 0xff; // one thread per compute unit
                entry.ecx = 0; // one node
            }
            _ => {}
        }
    }
}

/// A cache leaf's EAX (leaf 4 or 0x8000_001d) with the threads sharing the cache - 1
/// in bits 25:14: one for the first two levels, every core for the last.
fn cache_sharing(eax: u32, cores: u32) -> u32 {
    let level = (eax >> 5) & 0x7;
    let sharing = if level >= 3 { cores - 1 } else { 0 };
    (eax & 0x3fff) | ((sharing & 0xfff) << 14)
}

/// Sets the TSC-deadline timer bit in leaf 1.
pub(crate) fn set_tsc_deadline(entries: &mut [kvm_cpuid_entry2]) {
    for entry in entries.iter_mut().filter(|e| e.function == LEAF_FEATURES) {
        entry.ecx |= ECX_TSC_DEADLINE;
    }
}

/// One subleaf of leaf 0xb or 0x1f: level 0 the threads (one per core), level 1 the
/// cores, the rest invalid.
fn topology_level(entry: &mut kvm_cpuid_entry2, id: u32, topology: CpuTopology) {
    let level = entry.index;
    let (shift, count, kind) = match level {
        0 => (0, 1, LEVEL_SMT),
        1 => (topology.core_bits(), topology.vcpus, LEVEL_CORE),
        _ => (0, 0, 0),
    };
    entry.eax = shift;
    entry.ebx = count;
    entry.ecx = (kind << 8) | (level & 0xff);
    entry.edx = id;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: 0xffff_ffff,
            ebx: 0xffff_ffff,
            ecx: 0xffff_ffff,
            edx: 0xffff_ffff,
            ..Default::default()
        }
    }

    fn shaped(id: u32, vcpus: u32) -> Vec<kvm_cpuid_entry2> {
        let mut entries = vec![
            leaf(LEAF_FEATURES, 0),
            leaf(LEAF_CACHE_PARAMETERS, 0),
            leaf(LEAF_EXTENDED_TOPOLOGY, 0),
            leaf(LEAF_EXTENDED_TOPOLOGY, 1),
            leaf(LEAF_EXTENDED_TOPOLOGY, 2),
            leaf(LEAF_AMD_SIZES, 0),
            leaf(0x4000_0001, 0),
            leaf(LEAF_AMD_CACHE_TOPOLOGY, 3),
        ];
        shape(&mut entries, id, CpuTopology::new(vcpus));
        entries
    }

    #[test]
    fn leaf_1_reports_the_vcpu_apic_id_and_the_vms_processor_count() {
        let entries = shaped(2, 4);

        assert_eq!(entries[0].ebx >> 24, 2, "initial APIC id");
        assert_eq!((entries[0].ebx >> 16) & 0xff, 4, "logical processors");
        assert_ne!(entries[0].edx & EDX_HTT, 0);
        assert_ne!(entries[0].ecx & ECX_HYPERVISOR, 0);
    }

    #[test]
    fn the_topology_leaves_show_one_thread_per_core_and_the_vms_cores() {
        let entries = shaped(1, 2);

        let (smt, core, invalid) = (&entries[2], &entries[3], &entries[4]);
        assert_eq!(
            (smt.eax, smt.ebx, smt.ecx >> 8, smt.edx),
            (0, 1, LEVEL_SMT, 1)
        );
        assert_eq!(
            (core.eax, core.ebx, core.ecx >> 8, core.edx),
            (1, 2, LEVEL_CORE, 1)
        );
        assert_eq!((invalid.ebx, invalid.ecx >> 8), (0, 0));
        assert_eq!(entries[1].eax >> 26, 1, "leaf 4: cores - 1");
        assert_eq!(entries[5].ecx & 0xff, 1, "leaf 0x80000008: cores - 1");
        assert_eq!(
            (entries[7].eax >> 14) & 0xfff,
            1,
            "leaf 0x8000001d: L3 shared by both"
        );
    }

    #[test]
    fn nothing_of_the_hosts_topology_shows_on_a_single_vcpu() {
        let entries = shaped(0, 1);

        assert_eq!(entries[0].edx & EDX_HTT, 0);
        assert_eq!(entries[1].eax >> 14, 0, "leaf 4: one core, no sharing");
        assert_eq!(entries[3].ebx, 1);
        assert_eq!(entries[5].ecx & 0xf0ff, 0);
        assert_eq!(entries[6].eax, 0xffff_ffff, "the KVM leaves are left alone");
    }
}
