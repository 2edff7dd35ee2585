// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The pvpanic device (QEMU's ISA `pvpanic`, ACPI `QEMU0001`): a port where a guest
//! kernel reports that it panicked, before `panic=N` reboots it, so that the VMM can
//! tell a crash from a reboot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::{BusDevice, ShutdownReason, VmShutdown};

/// The port, as QEMU's and Cloud Hypervisor's.
pub const PVPANIC_PORT: u64 = 0x505;
/// The port's width.
pub const PVPANIC_PORT_LEN: u64 = 1;
/// The event a guest writes when it panicked.
pub const PVPANIC_PANICKED: u8 = 1 << 0;
/// The event a guest writes when it panicked with a crash kernel loaded, which it is
/// about to run (kdump).
pub const PVPANIC_CRASH_LOADED: u8 = 1 << 1;

/// A read returns the events the device takes; a write of [`PVPANIC_PANICKED`] ends
/// the VM with [`ShutdownReason::GuestPanic`]. [`PVPANIC_CRASH_LOADED`] is recorded
/// ([`crash_loaded`](Self::crash_loaded)) and the guest left to run its crash kernel,
/// as QEMU does; other bits are ignored.
#[derive(Debug)]
pub struct PvPanic {
    exit: Arc<VmShutdown>,
    crash_loaded: AtomicBool,
}

impl PvPanic {
    /// A pvpanic device reporting to `exit`.
    pub fn new(exit: Arc<VmShutdown>) -> Self {
        PvPanic {
            exit,
            crash_loaded: AtomicBool::new(false),
        }
    }

    /// Whether the guest reported a panic with a crash kernel loaded.
    pub fn crash_loaded(&self) -> bool {
        self.crash_loaded.load(Ordering::Relaxed)
    }
}

impl BusDevice for PvPanic {
    fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (0, Some(first)) = (offset, data.first_mut()) {
            *first = PVPANIC_PANICKED | PVPANIC_CRASH_LOADED;
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let (0, Some(&events)) = (offset, data.first()) else {
            return;
        };
        if events & PVPANIC_PANICKED != 0 {
            self.exit.request(ShutdownReason::GuestPanic);
        } else if events & PVPANIC_CRASH_LOADED != 0 {
            self.crash_loaded.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> (Arc<VmShutdown>, PvPanic) {
        let exit = Arc::new(VmShutdown::new().unwrap());
        (exit.clone(), PvPanic::new(exit))
    }

    #[test]
    fn a_read_offers_the_panicked_and_crash_loaded_events() {
        let (_, device) = device();
        let mut data = [0xffu8];

        device.read(0, &mut data);

        assert_eq!(data[0], PVPANIC_PANICKED | PVPANIC_CRASH_LOADED);
    }

    #[test]
    fn a_panic_ends_the_vm_as_a_guest_panic() {
        let (exit, device) = device();

        device.write(0, &[PVPANIC_PANICKED]);

        assert_eq!(exit.get(), Some(ShutdownReason::GuestPanic));
    }

    #[test]
    fn a_crash_kernel_is_left_to_run_and_other_writes_change_nothing() {
        let (exit, device) = device();

        device.write(0, &[0]);
        device.write(0, &[0x80]);
        device.write(0, &[]);
        let quiet = exit.get();
        device.write(0, &[PVPANIC_CRASH_LOADED]);

        assert_eq!(quiet, None);
        assert_eq!(exit.get(), None);
        assert!(device.crash_loaded());
    }
}
