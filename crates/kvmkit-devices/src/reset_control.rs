// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The PC's reset control register at port 0xcf9 (the PIIX chipset's): what Linux's
//! `reboot=p` (and its fallback after the keyboard controller) writes.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use crate::{BusDevice, ShutdownReason, VmShutdown};

/// The register's port.
pub const RESET_CONTROL_PORT: u64 = 0xcf9;
/// The register's width.
pub const RESET_CONTROL_PORT_LEN: u64 = 1;
/// The bit that resets the CPU (a hard or soft reset alike ends as a reboot).
pub const RESET_CPU: u8 = 1 << 2;

/// A write with [`RESET_CPU`] set ends the VM with [`ShutdownReason::Reboot`]; the
/// register reads back what was last written without it, as the chipset's does.
#[derive(Debug)]
pub struct ResetControl {
    exit: Arc<VmShutdown>,
    value: AtomicU8,
}

impl ResetControl {
    /// A reset control register reporting to `exit`.
    pub fn new(exit: Arc<VmShutdown>) -> Self {
        ResetControl {
            exit,
            value: AtomicU8::new(0),
        }
    }
}

impl BusDevice for ResetControl {
    fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (0, Some(first)) = (offset, data.first_mut()) {
            *first = self.value.load(Ordering::Relaxed);
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let (0, Some(&value)) = (offset, data.first()) else {
            return;
        };
        if value & RESET_CPU != 0 {
            self.exit.request(ShutdownReason::Reboot);
        } else {
            self.value.store(value, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_reboot_p_writes_end_the_vm_as_a_reboot() {
        for written in [0x06u8, 0x0e] {
            let exit = Arc::new(VmShutdown::new().unwrap());
            let register = ResetControl::new(exit.clone());

            // Linux writes 0x02 (select the hard reset), then 0x06 (or 0x0e).
            register.write(0, &[0x02]);
            let before = exit.get();
            register.write(0, &[written]);

            assert_eq!(before, None);
            assert_eq!(exit.get(), Some(ShutdownReason::Reboot), "{written:#x}");
        }
    }

    #[test]
    fn a_write_without_the_reset_bit_is_kept_and_read_back() {
        let exit = Arc::new(VmShutdown::new().unwrap());
        let register = ResetControl::new(exit.clone());
        let mut data = [0u8];

        register.write(0, &[0x02]);
        register.read(0, &mut data);

        assert_eq!(data[0], 0x02);
        assert_eq!(exit.get(), None);
    }
}
