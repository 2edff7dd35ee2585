// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Firecracker's boot timer: a guest marks the moment its boot is done (its init ran,
//! say) by writing [`BOOT_COMPLETE`] to the first byte of the device, so that a VMM
//! can tell how long a boot took to where the guest says it counts. The register is
//! Firecracker's (v1.16: one byte at the start of its 32-bit MMIO space, 0xc000_0000
//! on x86), so the same guest tooling (`devmem 0xc0000000 8 123`, Firecracker's
//! `init.c`) works on either VMM; where the VMM places it is the VMM's choice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use crate::BusDevice;

/// The byte a guest writes at offset 0 when its boot is complete (Firecracker's).
pub const BOOT_COMPLETE: u8 = 123;
/// The device's window: one page, as Firecracker's.
pub const BOOT_TIMER_LEN: u64 = 0x1000;

/// Records when the guest first said its boot was complete, and how often it said
/// so. Reads return zeros; any other write is ignored. Nothing a guest writes costs
/// more than an atomic add.
#[derive(Debug, Default)]
pub struct BootTimer {
    first: OnceLock<Instant>,
    signals: AtomicU64,
}

impl BootTimer {
    /// A timer no guest has signalled yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// When the guest first wrote [`BOOT_COMPLETE`], if it has.
    pub fn boot_completed_at(&self) -> Option<Instant> {
        self.first.get().copied()
    }

    /// How many times the guest wrote [`BOOT_COMPLETE`].
    pub fn signals(&self) -> u64 {
        self.signals.load(Ordering::Relaxed)
    }
}

impl BusDevice for BootTimer {
    fn read(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        // A byte-wide write at offset 0, as Firecracker's device takes it.
        if offset != 0 || data != [BOOT_COMPLETE] {
            return;
        }
        let now = Instant::now();
        self.first.get_or_init(|| now);
        self.signals.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_boot_complete_write_is_the_one_kept() {
        // Arrange
        let timer = BootTimer::new();
        let before = Instant::now();

        // Act
        timer.write(0, &[BOOT_COMPLETE]);
        let first = timer.boot_completed_at();
        timer.write(0, &[BOOT_COMPLETE]);

        // Assert
        let first = first.expect("the write was recorded");
        assert!(first >= before);
        assert_eq!(timer.boot_completed_at(), Some(first));
        assert_eq!(timer.signals(), 2);
    }

    #[test]
    fn other_values_offsets_and_widths_are_ignored() {
        // Arrange
        let timer = BootTimer::new();

        // Act
        timer.write(0, &[BOOT_COMPLETE - 1]);
        timer.write(1, &[BOOT_COMPLETE]);
        timer.write(0, &[BOOT_COMPLETE, 0, 0, 0]);
        timer.write(0, &[]);

        // Assert
        assert_eq!(timer.boot_completed_at(), None);
        assert_eq!(timer.signals(), 0);
    }

    #[test]
    fn reads_return_zeros() {
        let timer = BootTimer::new();
        timer.write(0, &[BOOT_COMPLETE]);
        let mut data = [0xffu8; 4];

        timer.read(0, &mut data);

        assert_eq!(data, [0; 4]);
    }
}
