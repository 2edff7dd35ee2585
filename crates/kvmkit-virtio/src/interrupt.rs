// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! How a virtio device interrupts the driver, and how it tells the transport it broke.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use virtio_bindings::virtio_mmio::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};
use vmm_sys_util::eventfd::EventFd;

/// Why a device interrupts the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InterruptKind {
    /// The device put buffers in a used ring.
    UsedBuffer,
    /// The configuration space changed (or the device needs a reset).
    ConfigChange,
}

impl InterruptKind {
    /// The bit the transport's interrupt status shows for this kind.
    pub fn status_bit(self) -> u32 {
        match self {
            InterruptKind::UsedBuffer => VIRTIO_MMIO_INT_VRING,
            InterruptKind::ConfigChange => VIRTIO_MMIO_INT_CONFIG,
        }
    }
}

/// A virtio device's interrupt: the status bits the transport shows the driver (and
/// the driver acknowledges), and the line behind them.
pub trait VirtioInterrupt: Send + Sync {
    /// Sets the bit of `kind` in the interrupt status and raises the line.
    fn signal(&self, kind: InterruptKind) -> io::Result<()>;
    /// The interrupt status the driver reads.
    fn status(&self) -> u32;
    /// Clears the status bits the driver acknowledged.
    fn acknowledge(&self, bits: u32);
    /// The event fd that raises the line, when there is one (a KVM irqfd, say): what
    /// a vhost backend would be handed.
    fn notifier(&self) -> Option<&EventFd>;
}

/// An interrupt raised by writing an event fd, which the VMM registers with its
/// hypervisor (as a KVM irqfd), so that raising it costs no exit.
#[derive(Debug)]
pub struct EventFdVirtioInterrupt {
    status: AtomicU32,
    event: EventFd,
}

impl EventFdVirtioInterrupt {
    /// A new interrupt with its own event fd.
    pub fn new() -> io::Result<Self> {
        Ok(EventFdVirtioInterrupt {
            status: AtomicU32::new(0),
            event: EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?,
        })
    }

    /// The event fd to register as the irqfd of the device's interrupt line.
    pub fn event(&self) -> &EventFd {
        &self.event
    }
}

impl VirtioInterrupt for EventFdVirtioInterrupt {
    fn signal(&self, kind: InterruptKind) -> io::Result<()> {
        self.status.fetch_or(kind.status_bit(), Ordering::AcqRel);
        self.event.write(1)
    }

    fn status(&self) -> u32 {
        self.status.load(Ordering::Acquire)
    }

    fn acknowledge(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::AcqRel);
    }

    fn notifier(&self) -> Option<&EventFd> {
        Some(&self.event)
    }
}

/// Set by a device that met a fault it cannot serve past (a queue whose rings the
/// driver broke): the transport then shows `DEVICE_NEEDS_RESET` until the driver
/// resets the device.
#[derive(Debug, Default)]
pub struct DeviceFault(AtomicBool);

impl DeviceFault {
    /// Marks the device as needing a reset.
    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether the device needs a reset.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Clears the flag: what a transport does when the driver resets the device.
    pub fn clear(&self) {
        self.0.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_sets_the_status_bit_and_writes_the_event_and_ack_clears_it() {
        let interrupt = EventFdVirtioInterrupt::new().unwrap();

        interrupt.signal(InterruptKind::UsedBuffer).unwrap();
        interrupt.signal(InterruptKind::ConfigChange).unwrap();
        let both = interrupt.status();
        interrupt.acknowledge(VIRTIO_MMIO_INT_VRING);

        assert_eq!(both, VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG);
        assert_eq!(interrupt.status(), VIRTIO_MMIO_INT_CONFIG);
        assert_eq!(interrupt.event().read().unwrap(), 2);
    }
}
