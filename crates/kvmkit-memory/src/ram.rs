// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Guest RAM mapped into the VMM process.

use std::io;

use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap};

use crate::{Backing, Error, MemoryConfig, MemoryLayout, RegionSpec};

/// One mapped region of guest RAM: where it is in the guest and in the VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamRegion {
    /// Guest-physical placement.
    pub spec: RegionSpec,
    /// Address of the first byte in the VMM process.
    pub host_addr: usize,
}

/// Guest RAM: the regions of a [`MemoryLayout`], each mapped with the [`Backing`] of a
/// [`MemoryConfig`].
///
/// The mappings live as long as the `GuestRam` or any clone of
/// [`memory()`](GuestRam::memory) that shares its regions.
#[derive(Debug)]
pub struct GuestRam {
    memory: GuestMemoryMmap,
    regions: Vec<RamRegion>,
    backing: Backing,
}

impl GuestRam {
    /// Maps every region of `layout` as `config` asks.
    pub fn new(layout: &MemoryLayout, config: &MemoryConfig) -> Result<Self, Error> {
        let backing = config.backing().clone();
        let mut mapped = Vec::with_capacity(layout.regions().len());
        let mut regions = Vec::with_capacity(layout.regions().len());
        for spec in layout.regions() {
            let region = map_region(spec, &backing)?;
            regions.push(RamRegion {
                spec: *spec,
                host_addr: region.as_ptr() as usize,
            });
            mapped.push(region);
        }
        let memory = GuestMemoryMmap::from_regions(mapped)?;
        Ok(GuestRam {
            memory,
            regions,
            backing,
        })
    }

    /// The memory as vm-memory sees it, for device emulation and memslots.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// The mapped regions, sorted by guest-physical address.
    pub fn regions(&self) -> &[RamRegion] {
        &self.regions
    }

    /// The backing of every region.
    pub fn backing(&self) -> &Backing {
        &self.backing
    }

    /// Total bytes of guest RAM.
    pub fn size(&self) -> u64 {
        self.regions.iter().map(|r| r.spec.size).sum()
    }
}

fn map_region(spec: &RegionSpec, backing: &Backing) -> Result<GuestRegionMmap, Error> {
    let map_error = |source: io::Error| Error::Map {
        guest_addr: spec.guest_addr,
        size: spec.size,
        backing: backing.to_string(),
        source,
    };
    let size = usize::try_from(spec.size)
        .map_err(|_| map_error(io::Error::from_raw_os_error(libc::ENOMEM)))?;
    let mapping = vm_memory::mmap::MmapRegionBuilder::new(size)
        .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
        .with_mmap_flags(backing.mmap_flags())
        .build()
        .map_err(|e| map_error(mmap_error_to_io(e)))?;
    GuestRegionMmap::new(mapping, GuestAddress(spec.guest_addr)).ok_or(Error::AddressOverflow {
        guest_addr: spec.guest_addr,
        size: spec.size,
    })
}

fn mmap_error_to_io(error: vm_memory::mmap::MmapRegionError) -> io::Error {
    match error {
        vm_memory::mmap::MmapRegionError::Mmap(source) => source,
        other => io::Error::other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};

    const MIB: u64 = 1 << 20;

    #[test]
    fn guest_ram_maps_every_region_of_the_layout() {
        let layout = MemoryLayout::from_regions(vec![
            RegionSpec {
                guest_addr: 0,
                size: 2 * MIB,
            },
            RegionSpec {
                guest_addr: 16 * MIB,
                size: MIB,
            },
        ])
        .unwrap();

        let ram = GuestRam::new(&layout, &MemoryConfig::default()).unwrap();

        assert_eq!(ram.memory().num_regions(), 2);
        assert_eq!(ram.size(), 3 * MIB);
        let high = ram.memory().iter().nth(1).unwrap();
        assert_eq!(high.start_addr(), GuestAddress(16 * MIB));
        assert_eq!(high.len(), MIB);
    }

    #[test]
    fn writes_through_the_guest_address_land_at_the_host_address() {
        let layout = MemoryLayout::x86_64(4 * MIB).unwrap();
        let ram = GuestRam::new(&layout, &MemoryConfig::default()).unwrap();

        ram.memory()
            .write_obj(0xdead_beef_u32, GuestAddress(0x2000))
            .unwrap();

        let host = ram.regions()[0].host_addr + 0x2000;
        // SAFETY: `host` points 0x2000 bytes into a live 4 MiB mapping owned by `ram`.
        let value = unsafe { std::ptr::read_volatile(host as *const u32) };
        assert_eq!(value, 0xdead_beef);
    }

    #[test]
    fn fresh_anonymous_memory_reads_as_zero() {
        let layout = MemoryLayout::x86_64(MIB).unwrap();
        let ram = GuestRam::new(&layout, &MemoryConfig::default()).unwrap();

        let mut buf = [0xffu8; 64];
        ram.memory()
            .read_slice(&mut buf, GuestAddress(MIB - 64))
            .unwrap();

        assert_eq!(buf, [0u8; 64]);
    }

    #[test]
    fn access_in_the_mmio_hole_is_an_error_not_a_crash() {
        let layout = MemoryLayout::x86_64(4 << 30).unwrap();
        let ram = GuestRam::new(&layout, &MemoryConfig::default()).unwrap();

        let result = ram
            .memory()
            .read_obj::<u32>(GuestAddress(crate::X86_MMIO_HOLE_START));

        assert!(result.is_err());
    }
}
