// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

#![deny(missing_docs)]
//! VM and vCPU control on KVM.
//!
//! A VM is one process; its guest RAM is memory mapped into that process and handed to
//! KVM as memslots; each vCPU is a thread that calls `KVM_RUN`. The guest then runs in
//! VMX/SVM non-root mode until something needs the VMM: a port or MMIO access the
//! kernel does not handle, a `hlt`, a triple fault. `KVM_RUN` returns, this crate turns
//! what happened into a typed [`VcpuExit`], and I/O goes to one narrow trait,
//! [`IoHandler`], so device models never see KVM.
//!
//! - [`Hypervisor`]: `/dev/kvm`, opened with a clear error when it is missing or closed.
//! - [`Vm`]: memslots from any [`vm_memory`] guest memory, the in-kernel irqchip and
//!   PIT, ioeventfds and irqfds, and vCPU creation with CPUID, MSRs and FPU state.
//! - [`Vcpu`]: CPU mode setup ([`CpuMode`]: real, protected, long) and the run loop.
//! - [`VcpuThread`]: one OS thread per vCPU (`vcpu0`, `vcpu1`, ...) with kick, pause,
//!   resume and stop through `immediate_exit` and a signal, optional pinning, and
//!   per-vCPU [`ExitCounts`].
//!
//! ```
//! use std::sync::Arc;
//! use kvmkit_vcpu::{CpuMode, Hypervisor, IoAction, IoHandler, Vm, VcpuExit};
//! # use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
//!
//! struct Console;
//! impl IoHandler for Console {
//!     fn pio_write(&self, port: u16, data: &[u8]) -> IoAction {
//!         if port == 0x3f8 {
//!             print!("{}", String::from_utf8_lossy(data));
//!         }
//!         IoAction::Continue
//!     }
//! }
//!
//! let memory = Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap());
//! // mov dx, 0x3f8; mov al, 'K'; out dx, al; hlt
//! memory.write_slice(&[0xba, 0xf8, 0x03, 0xb0, b'K', 0xee, 0xf4], GuestAddress(0x1000)).unwrap();
//!
//! let hypervisor = Hypervisor::open()?;
//! let vm = Vm::new(&hypervisor)?;
//! vm.register_memory(&memory)?;
//! let mut vcpu = vm.create_vcpu(0)?;
//! vcpu.enter_mode(&*memory, CpuMode::Real, 0x1000, 0x8000)?;
//! assert!(matches!(vcpu.run(&Console)?, VcpuExit::Hlt));
//! # Ok::<(), kvmkit_vcpu::Error>(())
//! ```

mod error;
mod exit;
mod hypervisor;
mod owners;
mod stats;
mod thread;
mod vcpu;
mod vm;
pub mod x86;

pub use error::{Error, MemslotError};
pub use exit::{IoAccess, IoAction, IoHandler, IoKind, SystemEventKind, VcpuExit};
pub use hypervisor::Hypervisor;
pub use stats::{ExitCounts, ExitReason, ExitStats};
pub use thread::{kick_signal, StartHook, VcpuHandle, VcpuOutcome, VcpuThread, VcpuThreadConfig};
pub use vcpu::Vcpu;
pub use vm::{
    DirtyBitmap, IoEventAddress, Memslot, MemslotOptions, NoDatamatch, Vm, MAX_MEMSLOT_SIZE,
};
pub use x86::{CpuMode, CpuTopology};

/// Re-exported so callers can name event fds without depending on vmm-sys-util.
pub use vmm_sys_util::eventfd::EventFd;
