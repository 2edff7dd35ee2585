// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The ACPI Generic Event Device (`ACPI0013`): how a hardware-reduced platform tells
//! its guest that something happened (the power button was pressed, the VM generation
//! changed). The VMM sets an event's bit and raises the device's interrupt; the
//! guest's `_EVT` method (in the DSDT) reads the pending events from the device's port,
//! which clears them, and notifies the ACPI device each names (`PWRB`, `VGEN`).

use std::io;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use crate::{BusDevice, Interrupt};

/// The port of the event register, read by the guest's `_EVT` method.
pub const GED_PORT: u64 = 0x508;
/// The register's width.
pub const GED_PORT_LEN: u64 = 1;
/// The interrupt line (edge-triggered), free on the platform's legacy map.
pub const GED_IRQ: u32 = 15;

/// An event the device reports, as its bit in the event register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GedEvent {
    /// The power button was pressed (ACPI `PNP0C0C`, notified 0x80): a guest's
    /// user space powers off in order, as on a PC.
    PowerButton,
    /// The VM generation ID changed (ACPI `VM_Gen_Counter`, notified 0x80): the VM
    /// was restored from a snapshot, and a guest reseeds its random numbers.
    VmGeneration,
}

impl GedEvent {
    /// The event's bit in the register (and in the `_EVT` method's tests).
    pub const fn bit(self) -> u8 {
        match self {
            GedEvent::PowerButton => 1 << 0,
            GedEvent::VmGeneration => 1 << 1,
        }
    }
}

/// The Generic Event Device: pending events, and the interrupt that reports them.
pub struct GenericEventDevice {
    pending: AtomicU8,
    interrupt: Arc<dyn Interrupt>,
}

impl std::fmt::Debug for GenericEventDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenericEventDevice")
            .field("pending", &self.pending.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl GenericEventDevice {
    /// A device raising `interrupt` (the VMM routes it to [`GED_IRQ`]).
    pub fn new(interrupt: Arc<dyn Interrupt>) -> Self {
        GenericEventDevice {
            pending: AtomicU8::new(0),
            interrupt,
        }
    }

    /// Reports `event` to the guest: its bit is set until the guest reads the
    /// register, and the interrupt is raised. Safe from any thread.
    pub fn notify(&self, event: GedEvent) -> io::Result<()> {
        self.pending.fetch_or(event.bit(), Ordering::SeqCst);
        self.interrupt.trigger()
    }

    /// The events the guest has not read yet.
    pub fn pending(&self) -> u8 {
        self.pending.load(Ordering::SeqCst)
    }

    /// Drops the events the guest has not read (the VM was reset).
    pub fn clear(&self) {
        self.pending.store(0, Ordering::SeqCst);
    }
}

impl BusDevice for GenericEventDevice {
    /// Returns the pending events and clears them (other offsets read 0).
    fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (0, Some(first)) = (offset, data.first_mut()) {
            *first = self.pending.swap(0, Ordering::SeqCst);
        }
    }

    /// Writes are ignored: the register is read-to-clear.
    fn write(&self, _offset: u64, _data: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventFdInterrupt;

    fn device() -> (Arc<EventFdInterrupt>, GenericEventDevice) {
        let interrupt = Arc::new(EventFdInterrupt::new().unwrap());
        (interrupt.clone(), GenericEventDevice::new(interrupt))
    }

    #[test]
    fn a_notified_event_raises_the_interrupt_and_reads_once() {
        let (interrupt, device) = device();

        device.notify(GedEvent::PowerButton).unwrap();
        let raised = interrupt.event().read().unwrap();
        let mut first = [0u8];
        device.read(0, &mut first);
        let mut second = [0u8];
        device.read(0, &mut second);

        assert_eq!(raised, 1);
        assert_eq!(first[0], GedEvent::PowerButton.bit());
        assert_eq!(second[0], 0, "reading did not clear the event");
    }

    #[test]
    fn events_not_yet_read_accumulate() {
        let (_, device) = device();

        device.notify(GedEvent::PowerButton).unwrap();
        device.notify(GedEvent::VmGeneration).unwrap();
        let mut data = [0u8; 2];
        device.read(0, &mut data);

        assert_eq!(data, [0b11, 0]);
        assert_eq!(device.pending(), 0);
    }

    #[test]
    fn guest_writes_and_reads_past_the_register_change_nothing() {
        let (_, device) = device();
        device.notify(GedEvent::VmGeneration).unwrap();

        device.write(0, &[0xff]);
        let mut past = [0xffu8];
        device.read(1, &mut past);

        assert_eq!(past[0], 0);
        assert_eq!(device.pending(), GedEvent::VmGeneration.bit());
    }
}
