// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The state KVM holds for a vCPU and for a VM, read and written back whole: what a
//! snapshot saves and a restore sets. Plain data (kvm-bindings' structures), with
//! serde, so that a VMM stores it as it likes.
//!
//! The fields are private: a state is only ever what [`VcpuState::save`] or
//! [`VmState::save`] read from KVM (or their deserialised copy), and KVM checks what
//! it is given back; the MSR list is rebuilt with its true length before it goes to
//! KVM.

use kvm_bindings::{
    kvm_clock_data, kvm_debugregs, kvm_irqchip, kvm_lapic_state, kvm_mp_state, kvm_msr_entry,
    kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, Msrs,
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::{VcpuFd, VmFd};
use serde::{Deserialize, Serialize};

use crate::Error;

/// The version of the state's layout; a state of another version is refused.
pub const STATE_VERSION: u32 = 1;

/// A vCPU's state as KVM holds it (CPUID excepted: a restored VM's vCPUs are created
/// with it, as the saved VM's were).
#[derive(Debug, Serialize, Deserialize)]
pub struct VcpuState {
    regs: kvm_regs,
    sregs: kvm_sregs,
    xsave: kvm_xsave,
    xcrs: kvm_xcrs,
    lapic: Option<kvm_lapic_state>,
    msrs: Vec<kvm_msr_entry>,
    mp_state: kvm_mp_state,
    events: kvm_vcpu_events,
    debugregs: kvm_debugregs,
}

impl Clone for VcpuState {
    fn clone(&self) -> Self {
        VcpuState {
            regs: self.regs,
            sregs: self.sregs,
            // Its flexible tail is empty: KVM_GET_XSAVE fills the fixed region only.
            xsave: kvm_xsave {
                region: self.xsave.region,
                ..Default::default()
            },
            xcrs: self.xcrs,
            lapic: self.lapic,
            msrs: self.msrs.clone(),
            mp_state: self.mp_state,
            events: self.events,
            debugregs: self.debugregs,
        }
    }
}

/// How many MSRs one `KVM_GET_MSRS` asks for.
const MSR_CHUNK: usize = 64;

impl VcpuState {
    /// Reads the state of the vCPU behind `fd` (paused: outside `KVM_RUN`), its MSRs
    /// those of `msr_indices` that KVM reads back (the list KVM gives for saving).
    pub(crate) fn save(fd: &VcpuFd, msr_indices: &[u32], lapic: bool) -> Result<Self, Error> {
        // The events first: KVM settles pending exceptions and interrupts into them.
        let events = fd
            .get_vcpu_events()
            .map_err(Error::kvm("KVM_GET_VCPU_EVENTS"))?;
        Ok(VcpuState {
            regs: fd.get_regs().map_err(Error::kvm("KVM_GET_REGS"))?,
            sregs: fd.get_sregs().map_err(Error::kvm("KVM_GET_SREGS"))?,
            xsave: fd.get_xsave().map_err(Error::kvm("KVM_GET_XSAVE"))?,
            xcrs: fd.get_xcrs().map_err(Error::kvm("KVM_GET_XCRS"))?,
            lapic: if lapic {
                Some(fd.get_lapic().map_err(Error::kvm("KVM_GET_LAPIC"))?)
            } else {
                None
            },
            msrs: read_msrs(fd, msr_indices)?,
            mp_state: fd.get_mp_state().map_err(Error::kvm("KVM_GET_MP_STATE"))?,
            events,
            debugregs: fd
                .get_debug_regs()
                .map_err(Error::kvm("KVM_GET_DEBUGREGS"))?,
        })
    }

    /// Writes the state back into the vCPU behind `fd` (created with the same CPUID,
    /// not yet run), in the order KVM needs: special registers before the registers
    /// and the FPU, MSRs before the events, the local APIC before the MP state.
    pub(crate) fn restore(&self, fd: &VcpuFd) -> Result<(), Error> {
        fd.set_sregs(&self.sregs)
            .map_err(Error::kvm("KVM_SET_SREGS"))?;
        fd.set_regs(&self.regs)
            .map_err(Error::kvm("KVM_SET_REGS"))?;
        fd.set_xcrs(&self.xcrs)
            .map_err(Error::kvm("KVM_SET_XCRS"))?;
        // SAFETY: KVM_SET_XSAVE reads `sizeof(kvm_xsave)` bytes unless the VM asked
        // for dynamically enabled XSAVE features (KVM_CAP_XSAVE2, AMX), which kvmkit
        // never does: the whole buffer is `self.xsave`.
        unsafe { fd.set_xsave(&self.xsave) }.map_err(Error::kvm("KVM_SET_XSAVE"))?;
        if let Some(lapic) = &self.lapic {
            fd.set_lapic(lapic).map_err(Error::kvm("KVM_SET_LAPIC"))?;
        }
        write_msrs(fd, &self.msrs)?;
        fd.set_mp_state(self.mp_state)
            .map_err(Error::kvm("KVM_SET_MP_STATE"))?;
        fd.set_vcpu_events(&self.events)
            .map_err(Error::kvm("KVM_SET_VCPU_EVENTS"))?;
        fd.set_debug_regs(&self.debugregs)
            .map_err(Error::kvm("KVM_SET_DEBUGREGS"))
    }

    /// The general registers.
    pub fn regs(&self) -> &kvm_regs {
        &self.regs
    }

    /// The MSRs saved, by index.
    pub fn msr(&self, index: u32) -> Option<u64> {
        self.msrs.iter().find(|m| m.index == index).map(|m| m.data)
    }
}

/// The MSRs of `indices` that KVM reads, in chunks; one it refuses (KVM stops at it)
/// is left out and the reading goes on after it.
fn read_msrs(fd: &VcpuFd, indices: &[u32]) -> Result<Vec<kvm_msr_entry>, Error> {
    let mut read = Vec::with_capacity(indices.len());
    let mut next = 0;
    while next < indices.len() {
        let chunk = &indices[next..(next + MSR_CHUNK).min(indices.len())];
        let entries: Vec<kvm_msr_entry> = chunk
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|_| Error::MsrRejected {
            set: 0,
            wanted: chunk.len(),
            first_rejected: chunk[0],
        })?;
        let got = fd.get_msrs(&mut msrs).map_err(Error::kvm("KVM_GET_MSRS"))?;
        read.extend_from_slice(&msrs.as_slice()[..got.min(chunk.len())]);
        // KVM stops at the first MSR it refuses: leave that one out.
        next += if got < chunk.len() { got + 1 } else { got };
    }
    Ok(read)
}

/// Writes `entries` back. One KVM refuses is left as it is only if the vCPU already
/// holds the saved value (KVM refuses some MSRs a guest never enabled, such as the
/// asynchronous page fault vector, even at their reset value); otherwise the write
/// fails, naming it: nothing saved is dropped.
fn write_msrs(fd: &VcpuFd, entries: &[kvm_msr_entry]) -> Result<(), Error> {
    let mut next = 0;
    while next < entries.len() {
        let chunk = &entries[next..(next + MSR_CHUNK).min(entries.len())];
        let msrs = Msrs::from_entries(chunk).map_err(|_| Error::MsrRejected {
            set: 0,
            wanted: chunk.len(),
            first_rejected: chunk[0].index,
        })?;
        let set = fd.set_msrs(&msrs).map_err(Error::kvm("KVM_SET_MSRS"))?;
        if set < chunk.len() {
            let refused = chunk[set];
            let held = read_msrs(fd, &[refused.index])?;
            if held.first().map(|m| m.data) != Some(refused.data) {
                return Err(Error::MsrRejected {
                    set: next + set,
                    wanted: entries.len(),
                    first_rejected: refused.index,
                });
            }
            next += set + 1;
        } else {
            next += set;
        }
    }
    Ok(())
}

/// A VM's state as KVM holds it beside its vCPUs: the in-kernel PICs and IOAPIC, the
/// PIT and the kvm-clock.
#[derive(Debug, Serialize, Deserialize)]
pub struct VmState {
    irqchips: Option<[kvm_irqchip; 3]>,
    pit: Option<kvm_pit_state2>,
    clock: kvm_clock_data,
}

impl VmState {
    /// Reads it (the vCPUs paused).
    pub(crate) fn save(fd: &VmFd, irqchip: bool) -> Result<Self, Error> {
        let irqchips = if irqchip {
            let chip = |chip_id| {
                let mut chip = kvm_irqchip {
                    chip_id,
                    ..Default::default()
                };
                fd.get_irqchip(&mut chip)
                    .map_err(Error::kvm("KVM_GET_IRQCHIP"))?;
                Ok::<_, Error>(chip)
            };
            Some([
                chip(KVM_IRQCHIP_PIC_MASTER)?,
                chip(KVM_IRQCHIP_PIC_SLAVE)?,
                chip(KVM_IRQCHIP_IOAPIC)?,
            ])
        } else {
            None
        };
        let pit = if irqchip {
            Some(fd.get_pit2().map_err(Error::kvm("KVM_GET_PIT2"))?)
        } else {
            None
        };
        let mut clock = fd.get_clock().map_err(Error::kvm("KVM_GET_CLOCK"))?;
        // KVM_SET_CLOCK takes the time alone (its other flags are read-only).
        clock.flags = 0;
        Ok(VmState {
            irqchips,
            pit,
            clock,
        })
    }

    /// Writes it back into a VM made as the saved one was (irqchip and PIT created).
    pub(crate) fn restore(&self, fd: &VmFd) -> Result<(), Error> {
        if let Some(chips) = &self.irqchips {
            for chip in chips {
                fd.set_irqchip(chip)
                    .map_err(Error::kvm("KVM_SET_IRQCHIP"))?;
            }
        }
        if let Some(pit) = &self.pit {
            fd.set_pit2(pit).map_err(Error::kvm("KVM_SET_PIT2"))?;
        }
        fd.set_clock(&self.clock)
            .map_err(Error::kvm("KVM_SET_CLOCK"))
    }

    /// The kvm-clock's time when it was saved, in nanoseconds.
    pub fn clock_ns(&self) -> u64 {
        self.clock.clock
    }
}
