// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Where a platform put its devices: what booting tells the guest about them.

use kvmkit_boot::{DeviceKind, LegacyDevices, PhysicalLayout};

use crate::{Error, VirtioMmioSlot};

/// The devices of a platform as a guest's firmware tables describe them: the
/// virtio-mmio windows in the MMIO hole and the legacy devices on ports.
/// [`Platform::devices`](crate::Platform::devices) gives them for
/// [`Machine::boot_on`](crate::Machine::boot_on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformDevices {
    /// The virtio-mmio devices, in the order they were added.
    pub virtio: Vec<VirtioMmioSlot>,
    /// COM1, the sleep registers and the reset register.
    pub legacy: LegacyDevices,
}

impl PlatformDevices {
    /// Adds these devices to `layout`, the address map the guest is told about.
    pub fn describe_in(&self, layout: &mut PhysicalLayout) -> Result<(), Error> {
        for slot in &self.virtio {
            layout.add_device(
                slot.base,
                slot.size,
                DeviceKind::VirtioMmio { irq: slot.irq },
            )?;
        }
        layout.set_legacy_devices(self.legacy);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VIRTIO_MMIO_BASE;

    #[test]
    fn described_devices_are_the_layouts_windows_and_legacy_devices() {
        let mut layout = PhysicalLayout::new(&[(0, 64 << 20)]).unwrap();
        let legacy = LegacyDevices {
            serial: None,
            ..LegacyDevices::default()
        };
        let devices = PlatformDevices {
            virtio: vec![VirtioMmioSlot {
                base: VIRTIO_MMIO_BASE,
                size: 0x1000,
                irq: 5,
                device_type: 2,
            }],
            legacy,
        };

        devices.describe_in(&mut layout).unwrap();

        assert_eq!(
            layout.virtio_mmio().collect::<Vec<_>>(),
            vec![(VIRTIO_MMIO_BASE, 0x1000, 5)]
        );
        assert_eq!(layout.legacy_devices(), &legacy);
    }
}
