// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! An address space that routes each access to the device registered for its range.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// A device on a bus. Called on the thread of the vCPU that made the access; a device
/// serializes its own state (each keeps its own lock), so accesses to two different
/// devices never wait for each other.
pub trait BusDevice: Send + Sync {
    /// The guest read `data.len()` bytes at `offset` into the device's range; fill
    /// all of `data`.
    fn read(&self, offset: u64, data: &mut [u8]);
    /// The guest wrote `data` at `offset` into the device's range.
    fn write(&self, offset: u64, data: &[u8]);
}

/// Answers a read of a byte-wide register: `value` in the first byte, zeros above.
pub fn reply_byte(data: &mut [u8], value: u8) {
    data.fill(0);
    if let Some(first) = data.first_mut() {
        *first = value;
    }
}

/// Which address space a bus is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressSpace {
    /// x86 I/O ports.
    Pio,
    /// Guest-physical MMIO.
    Mmio,
}

impl AddressSpace {
    /// The last address of the space: 0xffff for ports, `u64::MAX` for MMIO.
    pub fn last_addr(self) -> u64 {
        match self {
            AddressSpace::Pio => 0xffff,
            AddressSpace::Mmio => u64::MAX,
        }
    }
}

impl fmt::Display for AddressSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressSpace::Pio => "port",
            AddressSpace::Mmio => "MMIO",
        })
    }
}

/// What can go wrong when registering a device.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BusError {
    /// The new range overlaps a registered one.
    #[error(
        "cannot register {new} at {space} {new_base:#x}..={new_last:#x}: it overlaps {existing} \
         at {existing_base:#x}..={existing_last:#x}"
    )]
    Overlap {
        /// The address space.
        space: AddressSpace,
        /// The device being registered.
        new: String,
        /// Its first address.
        new_base: u64,
        /// Its last address.
        new_last: u64,
        /// The device already there.
        existing: String,
        /// Its first address.
        existing_base: u64,
        /// Its last address.
        existing_last: u64,
    },
    /// A range the address space cannot hold.
    #[error("cannot register {name} at {space} {base:#x} with length {len:#x}: {reason}")]
    BadRange {
        /// The address space.
        space: AddressSpace,
        /// The device.
        name: String,
        /// Its first address.
        base: u64,
        /// Its length.
        len: u64,
        /// Why the range is refused.
        reason: &'static str,
    },
}

struct Entry {
    /// The last address of the range (inclusive, so a range may end at 2^64).
    last: u64,
    name: String,
    device: Arc<dyn BusDevice>,
}

/// A port or MMIO address space.
///
/// Lookup is a `BTreeMap` range query (logarithmic). Registration takes a write lock;
/// the exit path takes only a read lock, which readers never wait on each other for,
/// so two vCPUs reaching two devices run in parallel.
pub struct Bus {
    space: AddressSpace,
    devices: RwLock<BTreeMap<u64, Entry>>,
    unmapped_reads: AtomicU64,
    unmapped_writes: AtomicU64,
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let devices = self.devices.read().unwrap_or_else(|e| e.into_inner());
        let mut map = f.debug_map();
        for (base, entry) in devices.iter() {
            map.entry(&format_args!("{base:#x}..={:#x}", entry.last), &entry.name);
        }
        map.finish()
    }
}

impl Bus {
    /// An empty bus for `space`.
    pub fn new(space: AddressSpace) -> Self {
        Bus {
            space,
            devices: RwLock::new(BTreeMap::new()),
            unmapped_reads: AtomicU64::new(0),
            unmapped_writes: AtomicU64::new(0),
        }
    }

    /// Registers `device` for the `len` addresses from `base`, named `name` in errors
    /// and listings. The range must be non-empty and lie inside the address space: at
    /// most up to port 0xffff, or up to the last 64-bit address.
    pub fn insert(
        &self,
        base: u64,
        len: u64,
        name: &str,
        device: Arc<dyn BusDevice>,
    ) -> Result<(), BusError> {
        let last = self
            .last_addr(base, len)
            .map_err(|reason| BusError::BadRange {
                space: self.space,
                name: name.to_string(),
                base,
                len,
                reason,
            })?;
        let mut devices = self.devices.write().unwrap_or_else(|e| e.into_inner());
        let before = devices.range(..=last).next_back();
        if let Some((&existing_base, existing)) = before.filter(|(_, e)| e.last >= base) {
            return Err(BusError::Overlap {
                space: self.space,
                new: name.to_string(),
                new_base: base,
                new_last: last,
                existing: existing.name.clone(),
                existing_base,
                existing_last: existing.last,
            });
        }
        devices.insert(
            base,
            Entry {
                last,
                name: name.to_string(),
                device,
            },
        );
        Ok(())
    }

    /// The last address of `len` addresses from `base`, or why they do not fit.
    fn last_addr(&self, base: u64, len: u64) -> Result<u64, &'static str> {
        if len == 0 {
            return Err("the range is empty");
        }
        let last = base
            .checked_add(len - 1)
            .ok_or("the range runs past the end of the 64-bit address space")?;
        if last > self.space.last_addr() {
            return Err("the range runs past the 64 KiB port space, whose last port is 0xffff");
        }
        Ok(last)
    }

    /// The device covering `addr` and the offset of `addr` into its range.
    fn find(&self, addr: u64) -> Option<(Arc<dyn BusDevice>, u64)> {
        let devices = self.devices.read().unwrap_or_else(|e| e.into_inner());
        let (base, entry) = devices.range(..=addr).next_back()?;
        (addr <= entry.last).then(|| (Arc::clone(&entry.device), addr - base))
    }

    /// Routes a read; an address no device claims reads as all-ones and is counted.
    pub fn read(&self, addr: u64, data: &mut [u8]) {
        match self.find(addr) {
            Some((device, offset)) => device.read(offset, data),
            None => {
                self.unmapped_reads.fetch_add(1, Ordering::Relaxed);
                data.fill(0xff);
            }
        }
    }

    /// Routes a write; an address no device claims is counted and ignored.
    pub fn write(&self, addr: u64, data: &[u8]) {
        match self.find(addr) {
            Some((device, offset)) => device.write(offset, data),
            None => {
                self.unmapped_writes.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Reads and writes that reached no device: `(reads, writes)`.
    pub fn unmapped_accesses(&self) -> (u64, u64) {
        (
            self.unmapped_reads.load(Ordering::Relaxed),
            self.unmapped_writes.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder {
        seen: Mutex<Vec<(u64, Vec<u8>)>>,
    }

    impl BusDevice for Recorder {
        fn read(&self, offset: u64, data: &mut [u8]) {
            data.fill((offset & 0xff) as u8);
        }
        fn write(&self, offset: u64, data: &[u8]) {
            self.seen.lock().unwrap().push((offset, data.to_vec()));
        }
    }

    #[test]
    fn access_reaches_the_device_with_the_offset_into_its_range() {
        let bus = Bus::new(AddressSpace::Pio);
        let uart = Arc::new(Recorder::default());
        bus.insert(0x3f8, 8, "uart", uart.clone()).unwrap();

        bus.write(0x3fb, &[0x80]);
        let mut data = [0u8; 1];
        bus.read(0x3fd, &mut data);

        assert_eq!(*uart.seen.lock().unwrap(), vec![(3, vec![0x80])]);
        assert_eq!(data, [5]);
    }

    #[test]
    fn overlapping_registration_is_refused_naming_both_devices() {
        let bus = Bus::new(AddressSpace::Pio);
        bus.insert(0x3f8, 8, "uart", Arc::new(Recorder::default()))
            .unwrap();

        let error = bus
            .insert(0x3fc, 2, "rogue", Arc::new(Recorder::default()))
            .unwrap_err();

        let message = error.to_string();
        assert!(
            message.contains("rogue") && message.contains("uart"),
            "{message}"
        );
        assert!(matches!(
            error,
            BusError::Overlap {
                existing_base: 0x3f8,
                ..
            }
        ));
    }

    #[test]
    fn range_covering_an_existing_device_is_refused() {
        let bus = Bus::new(AddressSpace::Mmio);
        bus.insert(0x1000, 0x10, "small", Arc::new(Recorder::default()))
            .unwrap();

        let result = bus.insert(0x0, 0x10000, "big", Arc::new(Recorder::default()));

        assert!(matches!(result, Err(BusError::Overlap { .. })));
    }

    #[test]
    fn adjacent_ranges_do_not_overlap() {
        let bus = Bus::new(AddressSpace::Pio);
        bus.insert(0x60, 1, "data", Arc::new(Recorder::default()))
            .unwrap();

        assert!(bus
            .insert(0x61, 1, "next", Arc::new(Recorder::default()))
            .is_ok());
        assert!(bus
            .insert(0x5f, 1, "before", Arc::new(Recorder::default()))
            .is_ok());
    }

    fn refusal_reason(result: Result<(), BusError>) -> &'static str {
        match result {
            Err(BusError::BadRange { reason, .. }) => reason,
            other => panic!("expected a bad range, got {other:?}"),
        }
    }

    #[test]
    fn empty_and_wrapping_ranges_are_refused_with_the_reason() {
        let bus = Bus::new(AddressSpace::Mmio);

        let empty = bus.insert(0x10, 0, "empty", Arc::new(Recorder::default()));
        let wrap = bus.insert(u64::MAX, 2, "wrap", Arc::new(Recorder::default()));

        assert!(refusal_reason(empty).contains("empty"));
        assert!(refusal_reason(wrap).contains("past the end of the 64-bit"));
    }

    #[test]
    fn a_range_ending_exactly_at_the_top_of_the_address_space_is_accepted() {
        let bus = Bus::new(AddressSpace::Mmio);
        let top = Arc::new(Recorder::default());

        bus.insert(u64::MAX - 0xfff, 0x1000, "top", top.clone())
            .unwrap();
        bus.write(u64::MAX, &[7]);

        assert_eq!(*top.seen.lock().unwrap(), vec![(0xfff, vec![7])]);
        let overlap = bus.insert(u64::MAX, 1, "last", Arc::new(Recorder::default()));
        assert!(matches!(overlap, Err(BusError::Overlap { .. })));
    }

    #[test]
    fn port_ranges_stay_inside_the_64k_port_space() {
        let bus = Bus::new(AddressSpace::Pio);

        let past = bus.insert(0xffff, 4, "debug-exit", Arc::new(Recorder::default()));
        let beyond = bus.insert(0x1_0000, 1, "nowhere", Arc::new(Recorder::default()));
        let last = bus.insert(0xfffc, 4, "last", Arc::new(Recorder::default()));

        let reason = refusal_reason(past);
        assert!(reason.contains("0xffff"), "{reason}");
        assert!(refusal_reason(beyond).contains("port space"));
        assert!(last.is_ok());
    }

    #[test]
    fn unmapped_access_reads_all_ones_and_is_counted() {
        let bus = Bus::new(AddressSpace::Pio);
        bus.insert(0x70, 2, "rtc", Arc::new(Recorder::default()))
            .unwrap();

        let mut data = [0u8; 4];
        bus.read(0x72, &mut data);
        bus.write(0x1234, &[1]);
        bus.write(0x6f, &[1]);

        assert_eq!(data, [0xff; 4]);
        assert_eq!(bus.unmapped_accesses(), (1, 2));
    }
}
