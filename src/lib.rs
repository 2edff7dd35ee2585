// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

#![deny(missing_docs)]
//! kvmkit: KVM virtualization as a library of small crates that compose through traits.
//!
//! | crate | re-exported as | job |
//! |---|---|---|
//! | `kvmkit-memory` | [`memory`] | guest memory layouts and backings, no KVM dependency |
//! | `kvmkit-vcpu` | [`vcpu`] | VM and vCPU control on KVM: memslots, CPU modes, typed exits, vCPU threads |
//! | `kvmkit-devices` | [`devices`] | PIO/MMIO bus, legacy devices, the I/O event loop, no KVM dependency |
//! | `kvmkit-virtio` | [`virtio`] | the virtio-mmio transport and virtio devices, no KVM dependency |
//! | `kvmkit-boot` | [`boot`] | Linux boot: bzImage, ELF, PVH, initrd, command line, e820, ACPI and MP tables, no KVM dependency |
//! | `kvmkit-guest-asm` | `guest_asm` (feature `guest-asm`) | small x86 guest programs from readable assembly |
//!
//! This facade adds the composition layer: a [`MachineBuilder`] that puts guest memory,
//! a VM and its vCPUs together and boots a [`BootImage`] (a program, or a Linux
//! kernel with [`LinuxBoot`]) on them, the [`platform`] that connects the devices to
//! the vCPUs, and the I/O thread that runs them ([`BootedMachine::run_on`]).
//!
//! ```
//! use std::sync::Arc;
//! use kvmkit::vcpu::CpuMode;
//! use kvmkit::vcpu::{IoAction, IoHandler, VcpuExit, VcpuOutcome};
//! use kvmkit::{MachineBuilder, RawProgram};
//!
//! struct Console;
//! impl IoHandler for Console {
//!     fn pio_write(&self, _port: u16, data: &[u8]) -> IoAction {
//!         print!("{}", String::from_utf8_lossy(data));
//!         IoAction::Continue
//!     }
//! }
//!
//! // mov dx, 0x3f8; mov al, '!'; out dx, al; hlt
//! let program = RawProgram::new(CpuMode::Long, 0x10_0000, [0x66, 0xba, 0xf8, 0x03, 0xb0, b'!', 0xee, 0xf4]);
//! let machine = MachineBuilder::new().memory_mib(16).vcpus(1).build()?;
//! let outcomes = machine.boot(&program)?.start(Arc::new(Console))?.wait()?;
//! assert_eq!(outcomes, vec![VcpuOutcome::Exited(VcpuExit::Hlt)]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod control;
mod error;
mod machine;
mod placement;
pub mod platform;
mod reboot;
mod run;
pub mod seccomp;
pub mod snapshot;
pub mod timeline;
mod virtio_mmio;

pub use control::{ControlError, VmControl, VmState};
pub use error::{Causes, Error};
pub use kvmkit_boot as boot;
pub use kvmkit_boot::{BootImage, LinuxBoot, RawProgram};
pub use kvmkit_devices as devices;
#[cfg(feature = "guest-asm")]
pub use kvmkit_guest_asm as guest_asm;
pub use kvmkit_memory as memory;
pub use kvmkit_vcpu as vcpu;
pub use kvmkit_virtio as virtio;
pub use machine::{BootedMachine, Machine, MachineBuilder, RunningMachine};
pub use placement::PlatformDevices;
pub use platform::{Platform, PlatformConfig, PlatformIo, StdinConsole};
pub use run::VmOutcome;
pub use snapshot::{Snapshot, SnapshotError, SnapshotReport};
pub use timeline::{Milestone, Timeline, TimelineReport};
pub use virtio_mmio::{NotifyPath, VirtioMmioSlot, VIRTIO_IRQS, VIRTIO_MMIO_BASE};
