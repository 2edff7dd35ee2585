// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Guest RAM mapped into the VMM process.

use std::io;
use std::sync::Arc;

use std::num::NonZeroUsize;

use vm_memory::bitmap::AtomicBitmap;
use vm_memory::mmap::{MmapRegionBuilder, MmapRegionError};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap};

use crate::layout::host_page_size;
use crate::{Backing, Error, MemoryConfig, MemoryLayout, RegionSpec};

/// Guest RAM as devices see it: vm-memory's mmap-backed memory with a dirty bitmap, in
/// which every write through vm-memory (a device filling a buffer) marks its 4 KiB
/// page, beside what the hypervisor logs for the guest's own writes.
pub type GuestMemory = GuestMemoryMmap<AtomicBitmap>;

/// The page size the dirty bitmap counts in, as KVM's dirty log does.
pub const DIRTY_PAGE_SIZE: usize = 4096;

/// One mapped region of guest RAM: where it is in the guest and in the VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RamRegion {
    /// Guest-physical placement.
    pub spec: RegionSpec,
    /// Address of the first byte in the VMM process.
    pub host_addr: usize,
}

/// Guest RAM: the regions of a [`MemoryLayout`], each mapped with the backing a
/// [`MemoryConfig`] asks for, advised (THP, KSM) and prefaulted as it asks.
///
/// The mappings live as long as the `GuestRam` or any clone of the `Arc` that
/// [`shared_memory()`](GuestRam::shared_memory) returns, such as the one a hypervisor keeps while
/// it maps the memory into a guest. Unmapping is the only teardown: it frees
/// KSM-merged pages as it frees the others, with no unmerging copy first.
#[derive(Debug)]
pub struct GuestRam {
    memory: Arc<GuestMemory>,
    regions: Vec<RamRegion>,
    backing: Backing,
    config: MemoryConfig,
}

impl GuestRam {
    /// Checks `config` against `layout` and the host, then maps every region.
    ///
    /// Every check happens before the first mapping; a failure maps nothing.
    pub fn new(layout: &MemoryLayout, config: &MemoryConfig) -> Result<Self, Error> {
        let backing = Backing::resolve(config, layout)?;
        let mut mapped = Vec::with_capacity(layout.regions().len());
        let mut regions = Vec::with_capacity(layout.regions().len());
        for spec in layout.regions() {
            let region = map_region(spec, &backing, config)?;
            regions.push(RamRegion {
                spec: *spec,
                host_addr: region.as_ptr() as usize,
            });
            mapped.push(region);
        }
        let memory = Arc::new(GuestMemory::from_regions(mapped)?);
        let ram = GuestRam {
            memory,
            regions,
            backing,
            config: config.clone(),
        };
        // On an error, dropping `ram` unmaps every region again.
        for region in &ram.regions {
            ram.prepare(region, config)?;
        }
        Ok(ram)
    }

    fn prepare(&self, region: &RamRegion, config: &MemoryConfig) -> Result<(), Error> {
        // A forked child (a helper the VMM execs, say) must not share or copy guest RAM.
        advise(region, libc::MADV_DONTFORK, "MADV_DONTFORK")?;
        if config.thp {
            advise(region, libc::MADV_HUGEPAGE, "MADV_HUGEPAGE")?;
        }
        if config.mergeable {
            advise(region, libc::MADV_MERGEABLE, "MADV_MERGEABLE")?;
        }
        if config.prefault {
            let page_size = self.backing.hugepage_size().unwrap_or_else(host_page_size);
            prefault(region, page_size)?;
        }
        Ok(())
    }

    /// The memory as vm-memory sees it, for device emulation.
    pub fn memory(&self) -> &GuestMemory {
        &self.memory
    }

    /// The memory in the `Arc` that owns its mappings, for whoever must keep them
    /// mapped beyond this `GuestRam`: a hypervisor's memslots, a device thread.
    pub fn shared_memory(&self) -> &Arc<GuestMemory> {
        &self.memory
    }

    /// The pages of region `index` written through vm-memory (by devices) since the
    /// last call, as a bitmap of 4 KiB pages (bit `i` of word `w` is page `64w + i`),
    /// cleared as it is read; `None` for a region that does not exist.
    pub fn take_written_pages(&self, index: usize) -> Option<Vec<u64>> {
        let region = vm_memory::GuestMemoryBackend::iter(&*self.memory).nth(index)?;
        Some(region.bitmap().get_and_reset())
    }

    /// The mapped regions, sorted by guest-physical address.
    pub fn regions(&self) -> &[RamRegion] {
        &self.regions
    }

    /// The backing of every region.
    pub fn backing(&self) -> &Backing {
        &self.backing
    }

    /// The options the memory was built with.
    pub fn config(&self) -> &MemoryConfig {
        &self.config
    }

    /// Total bytes of guest RAM.
    pub fn size(&self) -> u64 {
        self.regions.iter().map(|r| r.spec.size).sum()
    }
}

fn map_region(
    spec: &RegionSpec,
    backing: &Backing,
    config: &MemoryConfig,
) -> Result<GuestRegionMmap<AtomicBitmap>, Error> {
    let map_error = |source: io::Error| Error::Map {
        guest_addr: spec.guest_addr,
        size: spec.size,
        backing: backing.to_string(),
        source,
    };
    let size = usize::try_from(spec.size)
        .map_err(|_| map_error(io::Error::from_raw_os_error(libc::ENOMEM)))?;
    let page = NonZeroUsize::new(DIRTY_PAGE_SIZE).expect("a page is not empty");
    let mut builder = MmapRegionBuilder::new_with_bitmap(size, AtomicBitmap::new(size, page))
        .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
        .with_mmap_flags(backing.mmap_flags(config.reserve))
        .with_hugetlbfs(backing.hugepage_size().is_some());
    if let Some(file) = backing.create_file(spec)? {
        builder = builder.with_file_offset(FileOffset::new(file, 0));
    }
    let mapping = builder
        .build()
        .map_err(|e| map_error(mmap_error_to_io(e)))?;
    GuestRegionMmap::new(mapping, GuestAddress(spec.guest_addr)).ok_or(Error::AddressOverflow {
        guest_addr: spec.guest_addr,
        size: spec.size,
    })
}

fn mmap_error_to_io(error: MmapRegionError) -> io::Error {
    match error {
        MmapRegionError::Mmap(source) => source,
        other => io::Error::other(other.to_string()),
    }
}

fn advise(region: &RamRegion, advice: i32, name: &'static str) -> Result<(), Error> {
    // SAFETY: the range is exactly one live mapping owned by the GuestRam; the advice
    // values used here change paging policy, never the memory's contents.
    let ret = unsafe {
        libc::madvise(
            region.host_addr as *mut libc::c_void,
            usize::try_from(region.spec.size).unwrap_or(usize::MAX),
            advice,
        )
    };
    if ret != 0 {
        return Err(Error::Advise {
            advice: name,
            guest_addr: region.spec.guest_addr,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Faults every page of `region` in: `MADV_POPULATE_WRITE` (Linux 5.14), or on older
/// kernels a write of each page's first byte back to itself.
fn prefault(region: &RamRegion, page_size: u64) -> Result<(), Error> {
    match advise(region, libc::MADV_POPULATE_WRITE, "MADV_POPULATE_WRITE") {
        Err(Error::Advise { source, .. }) if source.raw_os_error() == Some(libc::EINVAL) => {
            touch_pages(region, page_size);
            Ok(())
        }
        other => other,
    }
}

fn touch_pages(region: &RamRegion, page_size: u64) {
    let mut offset = 0;
    while offset < region.spec.size {
        let byte = (region.host_addr as u64 + offset) as *mut u8;
        // SAFETY: `byte` lies inside the live read-write mapping of `region`; reading
        // and writing back the same value leaves the guest's memory unchanged.
        unsafe { std::ptr::write_volatile(byte, std::ptr::read_volatile(byte)) };
        offset += page_size;
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
            .read_obj::<u32>(GuestAddress(crate::x86::MMIO_HOLE.start));

        assert!(result.is_err());
    }

    #[test]
    fn writes_through_vm_memory_mark_their_pages_until_taken() {
        let layout = MemoryLayout::x86_64(MIB).unwrap();
        let ram = GuestRam::new(&layout, &MemoryConfig::default()).unwrap();

        ram.memory().write_obj(1u8, GuestAddress(0x5000)).unwrap();
        ram.memory()
            .write_slice(&[2u8; 0x1800], GuestAddress(0x8800))
            .unwrap();
        let written = ram.take_written_pages(0).unwrap();
        let again = ram.take_written_pages(0).unwrap();

        assert_eq!(written[0], (1 << 5) | (1 << 8) | (1 << 9));
        assert!(again.iter().all(|&w| w == 0));
        assert!(ram.take_written_pages(1).is_none());
    }

    #[test]
    fn touching_pages_keeps_their_contents() {
        let layout = MemoryLayout::x86_64(MIB).unwrap();
        let ram = GuestRam::new(&layout, &MemoryConfig::default()).unwrap();
        ram.memory()
            .write_obj(0x5au8, GuestAddress(0x3000))
            .unwrap();

        touch_pages(&ram.regions()[0], 4096);

        assert_eq!(
            ram.memory().read_obj::<u8>(GuestAddress(0x3000)).unwrap(),
            0x5a
        );
    }
}
