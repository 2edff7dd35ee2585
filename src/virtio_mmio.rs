// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! virtio-mmio devices on the platform: where they sit, and the KVM side of their
//! notifications and interrupts.

use std::io;
use std::sync::Arc;

use kvmkit_vcpu::{IoEventAddress, Vm};
use kvmkit_virtio::{EventFdVirtioInterrupt, MmioTransport, QueueNotifiers};
use vmm_sys_util::eventfd::EventFd;

/// The first virtio-mmio window, in the 32-bit MMIO hole below the IOAPIC.
pub const VIRTIO_MMIO_BASE: u64 = kvmkit_memory::x86::VIRTIO_MMIO.start;
/// The interrupt lines virtio-mmio devices get, in order: ISA lines no legacy device
/// of the platform uses (COM1 has 4, the RTC 8).
pub const VIRTIO_IRQS: [u32; 8] = [5, 6, 7, 9, 10, 11, 12, 14];

/// How a driver's queue notifications reach a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotifyPath {
    /// A KVM ioeventfd on the notify register: no exit to the VMM.
    Ioeventfd,
    /// An MMIO exit to the transport, which signals the same event fd.
    MmioExit,
}

/// Where a virtio-mmio device sits: what a guest must be told about it (on the kernel
/// command line or in ACPI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct VirtioMmioSlot {
    /// Guest-physical base of the register window.
    pub base: u64,
    /// Bytes of the window.
    pub size: u64,
    /// Its interrupt line (GSI).
    pub irq: u32,
    /// The virtio device type.
    pub device_type: u32,
}

impl VirtioMmioSlot {
    /// The Linux command-line parameter that describes the device to a kernel with
    /// `virtio_mmio` built in: `virtio_mmio.device=4K@0xd0000000:5`.
    pub fn kernel_parameter(&self) -> String {
        format!(
            "virtio_mmio.device={}K@{:#x}:{}",
            self.size >> 10,
            self.base,
            self.irq
        )
    }
}

/// A device added to the platform, and what keeps it wired.
pub(crate) struct VirtioMmioDevice {
    pub(crate) slot: VirtioMmioSlot,
    pub(crate) transport: Arc<MmioTransport>,
    /// Registered with KVM as the irqfd of `slot.irq`.
    pub(crate) _interrupt: Arc<EventFdVirtioInterrupt>,
}

/// Queue notifications through KVM ioeventfds on the VM.
pub(crate) struct VmNotifiers(pub(crate) Arc<Vm>);

impl QueueNotifiers for VmNotifiers {
    fn register(&self, addr: u64, queue: u16, event: &EventFd) -> io::Result<bool> {
        self.0
            .register_ioeventfd(event, IoEventAddress::Mmio(addr), u32::from(queue))
            .map(|()| true)
            .map_err(io::Error::other)
    }

    fn unregister(&self, addr: u64, queue: u16, event: &EventFd) -> io::Result<()> {
        self.0
            .unregister_ioeventfd(event, IoEventAddress::Mmio(addr), u32::from(queue))
            .map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_virtio_window_fits_in_the_maps_virtio_area() {
        let windows = kvmkit_virtio::MMIO_WINDOW * VIRTIO_IRQS.len() as u64;

        assert!(windows <= kvmkit_memory::x86::VIRTIO_MMIO.size);
    }

    #[test]
    fn the_kernel_parameter_names_size_base_and_irq() {
        let slot = VirtioMmioSlot {
            base: VIRTIO_MMIO_BASE,
            size: 0x1000,
            irq: 5,
            device_type: 4,
        };

        assert_eq!(
            slot.kernel_parameter(),
            "virtio_mmio.device=4K@0xd0000000:5"
        );
    }
}
