// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A reboot in place: the VM boots its image again in the same process, on the same
//! guest RAM, vCPUs and devices ([`VmControl::reboot`](crate::VmControl::reboot),
//! Cloud Hypervisor's `vm.reboot`).
//!
//! A machine booted with [`Machine::boot_rebootable_on`](crate::Machine::boot_rebootable_on)
//! keeps its image. When it starts running, the state of every vCPU and of the VM
//! (irqchip, PIT, clock) before the first guest instruction is kept too. A reboot,
//! with the vCPUs and devices paused: resets every virtio device (as a driver's reset
//! does: nothing of the old generation touches guest memory after it), loads the
//! image again (kernel, initrd, boot tables) and writes the entry mode's tables,
//! puts the VM's and each vCPU's first state back, and resumes. Guest RAM is not
//! cleared, as a PC's reset does not clear it: the image and tables the boot needs
//! are written again, and the rest is the guest's to initialise.

use kvmkit_boot::{BootEntry, EntryProtocol};
use kvmkit_memory::x86::CpuMode;
use kvmkit_vcpu::x86::{VcpuState, VmState};

use crate::{Error, Platform, RunningMachine};

/// Loads the machine's image into guest memory again: where it enters.
pub(crate) type Reload =
    Box<dyn Fn(&kvmkit_memory::GuestMemory) -> Result<BootEntry, Error> + Send>;

/// What a booted machine keeps to reboot in place.
pub(crate) struct Rebootable {
    pub(crate) reload: Reload,
}

impl std::fmt::Debug for Rebootable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rebootable").finish_non_exhaustive()
    }
}

/// A running machine's way back to its first instruction.
pub(crate) struct RebootPlan {
    reload: Reload,
    vcpus: Vec<VcpuState>,
    vm: VmState,
}

impl RebootPlan {
    /// The plan for a machine about to run for the first time, whose vCPUs and VM
    /// hold their first state now.
    pub(crate) fn new(rebootable: Rebootable, machine: &crate::Machine) -> Result<Self, Error> {
        let vcpus = machine
            .vcpus()
            .iter()
            .map(kvmkit_vcpu::Vcpu::save_state)
            .collect::<Result<Vec<_>, _>>()?;
        let vm = machine.vm().save_state()?;
        Ok(RebootPlan {
            reload: rebootable.reload,
            vcpus,
            vm,
        })
    }

    /// Reboots the paused `running` machine on `platform`, its devices paused too;
    /// the caller resumes them.
    pub(crate) fn reboot(
        &self,
        running: &RunningMachine,
        platform: &Platform,
    ) -> Result<(), Error> {
        platform.reset_devices();
        let memory = running.ram().memory();
        let entry = (self.reload)(memory)?;
        kvmkit_vcpu::x86::write_mode_tables(memory, entry_mode(&entry))?;
        running.vm().restore_state(&self.vm)?;
        for (handle, state) in running.vcpus().iter().zip(&self.vcpus) {
            handle.restore_state(state)?;
        }
        Ok(())
    }
}

/// The mode the boot vCPU enters `entry` in.
fn entry_mode(entry: &BootEntry) -> CpuMode {
    match entry.protocol {
        EntryProtocol::Program { mode, .. } => mode,
        EntryProtocol::Pvh { .. } => CpuMode::Protected,
        _ => CpuMode::Long,
    }
}
