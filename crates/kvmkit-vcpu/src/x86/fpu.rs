// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The x87 and SSE state a vCPU starts with.

use kvm_bindings::kvm_fpu;
use kvm_ioctls::VcpuFd;

use crate::Error;

/// x87 control word after FNINIT: all exceptions masked, 64-bit precision.
const FCW_DEFAULT: u16 = 0x37f;
/// MXCSR after reset: all SSE exceptions masked.
const MXCSR_DEFAULT: u32 = 0x1f80;

pub(crate) fn configure(fd: &VcpuFd) -> Result<(), Error> {
    let fpu = kvm_fpu {
        fcw: FCW_DEFAULT,
        mxcsr: MXCSR_DEFAULT,
        ..Default::default()
    };
    fd.set_fpu(&fpu).map_err(Error::kvm("KVM_SET_FPU"))
}
