// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Guest power-off: the ACPI hardware-reduced sleep control and status registers (a
//! kernel uses hardware-reduced sleep only when the FADT names both).

use std::sync::Arc;

use crate::{BusDevice, ShutdownReason, VmShutdown};

/// The port of the sleep control register (an ACPI FADT points the guest here).
pub const ACPI_SLEEP_CONTROL_PORT: u64 = 0x600;
/// The sleep control register (one byte) and the sleep status register after it.
pub const ACPI_SLEEP_CONTROL_LEN: u64 = 2;
/// The sleep status register's offset from the control register: it reads 0 (no
/// wake event) and ignores writes, which is all a VM that only powers off needs.
pub const ACPI_SLEEP_STATUS_OFFSET: u64 = 1;
/// The sleep type the platform's `\_S5` object names for soft-off.
pub const S5_SLEEP_TYPE: u8 = 5;

/// SLP_EN: bit 5 of the sleep control register.
const SLEEP_ENABLE: u8 = 1 << 5;
/// SLP_TYP: bits 2..=4.
const SLEEP_TYPE_SHIFT: u8 = 2;
const SLEEP_TYPE_MASK: u8 = 0x7;

/// The ACPI hardware-reduced sleep control register: writing SLP_EN with the S5
/// sleep type (`0x34`) powers the VM off ([`ShutdownReason::PowerOff`]); other sleep
/// states are not supported and ignored.
#[derive(Debug)]
pub struct AcpiSleepControl {
    exit: Arc<VmShutdown>,
}

impl AcpiSleepControl {
    /// A sleep control register reporting power-off to `exit`.
    pub fn new(exit: Arc<VmShutdown>) -> Self {
        AcpiSleepControl { exit }
    }
}

impl BusDevice for AcpiSleepControl {
    fn read(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        if offset == ACPI_SLEEP_STATUS_OFFSET {
            return;
        }
        let Some(&value) = data.first() else { return };
        let sleep_type = (value >> SLEEP_TYPE_SHIFT) & SLEEP_TYPE_MASK;
        if value & SLEEP_ENABLE != 0 && sleep_type == S5_SLEEP_TYPE {
            self.exit.request(ShutdownReason::PowerOff);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s5_with_sleep_enable_powers_off() {
        let exit = Arc::new(VmShutdown::new().unwrap());
        let register = AcpiSleepControl::new(exit.clone());

        register.write(0, &[(S5_SLEEP_TYPE << SLEEP_TYPE_SHIFT) | SLEEP_ENABLE]);

        assert_eq!(exit.get(), Some(ShutdownReason::PowerOff));
    }

    #[test]
    fn other_sleep_states_or_no_enable_bit_are_ignored() {
        let exit = Arc::new(VmShutdown::new().unwrap());
        let register = AcpiSleepControl::new(exit.clone());

        register.write(0, &[S5_SLEEP_TYPE << SLEEP_TYPE_SHIFT]);
        register.write(0, &[(3 << SLEEP_TYPE_SHIFT) | SLEEP_ENABLE]);

        assert_eq!(exit.get(), None);
    }

    #[test]
    fn a_write_to_the_status_register_never_powers_off() {
        let exit = Arc::new(VmShutdown::new().unwrap());
        let register = AcpiSleepControl::new(exit.clone());

        register.write(
            ACPI_SLEEP_STATUS_OFFSET,
            &[(S5_SLEEP_TYPE << SLEEP_TYPE_SHIFT) | SLEEP_ENABLE],
        );

        assert_eq!(exit.get(), None);
    }
}
