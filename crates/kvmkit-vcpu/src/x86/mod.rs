// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! x86 CPU state: the modes a guest can start in, and the CPUID, MSR, FPU and local
//! APIC setup every vCPU gets.

pub(crate) mod cpuid;
pub(crate) mod fpu;
pub(crate) mod lapic;
mod mode;
pub(crate) mod msrs;
mod state;

pub use cpuid::{shape as shape_cpuid, CpuTopology};
pub use mode::enter as set_mode;
pub use mode::write_tables as write_mode_tables;
pub use mode::{CpuMode, IDENTITY_MAPPED_BYTES};
pub use state::{VcpuState, VmState, STATE_VERSION};
