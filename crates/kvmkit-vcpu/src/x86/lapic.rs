// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The local APIC's wiring when the irqchip is in the kernel.

use kvm_ioctls::VcpuFd;

use crate::Error;

const APIC_LVT_LINT0: usize = 0x350;
const APIC_LVT_LINT1: usize = 0x360;
const APIC_DELIVERY_MODE_SHIFT: u32 = 8;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// Wires LINT0 to the PIC (ExtINT) and LINT1 to NMI, as PC firmware leaves them.
pub(crate) fn configure(fd: &VcpuFd) -> Result<(), Error> {
    let mut lapic = fd.get_lapic().map_err(Error::kvm("KVM_GET_LAPIC"))?;
    set_delivery_mode(&mut lapic.regs, APIC_LVT_LINT0, APIC_MODE_EXTINT);
    set_delivery_mode(&mut lapic.regs, APIC_LVT_LINT1, APIC_MODE_NMI);
    fd.set_lapic(&lapic).map_err(Error::kvm("KVM_SET_LAPIC"))
}

fn set_delivery_mode(regs: &mut [std::os::raw::c_char], offset: usize, mode: u32) {
    let mut bytes = [0u8; 4];
    for (byte, reg) in bytes.iter_mut().zip(&regs[offset..offset + 4]) {
        *byte = *reg as u8;
    }
    let value = u32::from_le_bytes(bytes);
    let value = (value & !(0x700)) | (mode << APIC_DELIVERY_MODE_SHIFT);
    for (reg, byte) in regs[offset..offset + 4].iter_mut().zip(value.to_le_bytes()) {
        *reg = byte as std::os::raw::c_char;
    }
}
