// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Guest RAM mapped into the VMM process.

use std::fs::File;
use std::io;
use std::sync::Arc;

use std::num::NonZeroUsize;

use vm_memory::bitmap::AtomicBitmap;
use vm_memory::mmap::{MmapRegion, MmapRegionBuilder, MmapRegionError};
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
    /// The file the regions are private mappings of ([`GuestRam::from_image`]).
    image: Option<Arc<File>>,
}

impl GuestRam {
    /// Checks `config` against `layout` and the host, then maps every region.
    ///
    /// Every check happens before the first mapping; a failure maps nothing.
    pub fn new(layout: &MemoryLayout, config: &MemoryConfig) -> Result<Self, Error> {
        let backing = Backing::resolve(config, layout)?;
        Self::map(layout, config, backing, None)
    }

    /// Maps `layout` as `config` asks, each region a private copy-on-write mapping of
    /// `image`, which holds the regions one after another (as a snapshot's memory file
    /// does): a page is read from the image when the guest or a device first touches
    /// it and copied when first written, so mapping costs neither the image's size nor
    /// guest RAM's, and the image never changes. Where the image has a hole over a
    /// whole aligned 2 MiB page (memory the guest never used), RAM is plain anonymous
    /// memory, as fresh RAM is. Only private anonymous memory (the
    /// default backing) can start so; hugepages and shared memory are filled by copying
    /// instead.
    ///
    /// The image must keep its length while the RAM is mapped: a page past a shrunk
    /// image's end faults with `SIGBUS` when touched, as with any mapped file.
    pub fn from_image(
        layout: &MemoryLayout,
        config: &MemoryConfig,
        image: &File,
    ) -> Result<Self, Error> {
        let backing = Backing::resolve(config, layout)?;
        if backing != Backing::Anonymous {
            return Err(Error::ImageBacking {
                backing: backing.to_string(),
            });
        }
        let length = image.metadata().map_err(Error::ImageLength)?.len();
        if length < layout.total_size() {
            return Err(Error::ImageTooShort {
                length,
                needed: layout.total_size(),
            });
        }
        let image = Arc::new(image.try_clone().map_err(Error::ImageLength)?);
        Self::map(layout, config, backing, Some(image))
    }

    fn map(
        layout: &MemoryLayout,
        config: &MemoryConfig,
        backing: Backing,
        image: Option<Arc<File>>,
    ) -> Result<Self, Error> {
        let mut mapped = Vec::with_capacity(layout.regions().len());
        let mut regions = Vec::with_capacity(layout.regions().len());
        let mut image_offset = 0;
        for spec in layout.regions() {
            let source = image.as_ref().map(|file| (file, image_offset));
            let region = map_region(spec, &backing, config, source)?;
            regions.push(RamRegion {
                spec: *spec,
                host_addr: region.as_ptr() as usize,
            });
            mapped.push(region);
            image_offset += spec.size;
        }
        let memory = Arc::new(GuestMemory::from_regions(mapped)?);
        let ram = GuestRam {
            memory,
            regions,
            backing,
            config: config.clone(),
            image,
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

    /// Which host pages of region `index` hold what the guest or the VMM wrote: those
    /// present in host memory or swapped out (`/proc/self/pagemap`). Every other page
    /// of private memory was never touched and reads as zero, so a snapshot need not
    /// read it. `None` where this process's page tables cannot tell: shared memory
    /// (another process may have written it), RAM mapped from an image (an untouched
    /// page holds the image's data), and a region that does not exist.
    pub fn touched_pages(&self, index: usize) -> Result<Option<Vec<bool>>, Error> {
        const PRESENT: u64 = 1 << 63;
        const SWAPPED: u64 = 1 << 62;
        /// Entries read at once (512 KiB).
        const CHUNK: usize = 1 << 16;
        let Some(region) = self.regions.get(index) else {
            return Ok(None);
        };
        if self.backing.is_shared() || self.image.is_some() {
            return Ok(None);
        }
        let report = |source| Error::Report {
            what: format!(
                "/proc/self/pagemap for guest memory at {:#x}",
                region.spec.guest_addr
            ),
            source,
        };
        let page = host_page_size();
        let pages = usize::try_from(region.spec.size / page)
            .map_err(|_| report(io::Error::from_raw_os_error(libc::EOVERFLOW)))?;
        let mut pagemap = File::open("/proc/self/pagemap").map_err(report)?;
        let first = region.host_addr as u64 / page * 8;
        io::Seek::seek(&mut pagemap, io::SeekFrom::Start(first)).map_err(report)?;
        let mut touched = Vec::with_capacity(pages);
        let mut entries = vec![0u8; CHUNK.min(pages) * 8];
        while touched.len() < pages {
            let count = CHUNK.min(pages - touched.len());
            io::Read::read_exact(&mut pagemap, &mut entries[..count * 8]).map_err(report)?;
            touched.extend(entries[..count * 8].chunks_exact(8).map(|entry| {
                let entry = u64::from_le_bytes(entry.try_into().unwrap_or_default());
                entry & (PRESENT | SWAPPED) != 0
            }));
        }
        Ok(Some(touched))
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

    /// The image the regions are private copies of, for RAM made by
    /// [`from_image`](Self::from_image).
    pub fn image(&self) -> Option<&File> {
        self.image.as_deref()
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
    image: Option<(&Arc<File>, u64)>,
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
    let mut flags = backing.mmap_flags(config.reserve);
    let mut file = backing
        .create_file(spec)?
        .map(|file| FileOffset::new(file, 0));
    if let Some((image, offset)) = image {
        // The image's pages, copied on write instead of anonymous ones.
        flags &= !libc::MAP_ANONYMOUS;
        file = Some(FileOffset::from_arc(Arc::clone(image), offset));
    }
    let builder = || {
        let builder = MmapRegionBuilder::new_with_bitmap(size, AtomicBitmap::new(size, page))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(flags)
            .with_hugetlbfs(backing.hugepage_size().is_some());
        match &file {
            Some(file) => builder.with_file_offset(file.clone()),
            None => builder,
        }
    };
    let build = |builder: MmapRegionBuilder<AtomicBitmap>| {
        builder.build().map_err(|e| map_error(mmap_error_to_io(e)))
    };
    // Hugetlb mappings are aligned to their page size by the kernel already; others
    // go into an aligned hole. A mapping the kernel put elsewhere (in a higher gap
    // that fits it but not the hole's reservation, or in the hole before another
    // thread's mapping) is kept while the next is made, so that the gap it took is not
    // chosen again, and dropped after. The builder, its bitmap allocated, is made
    // before the hole, so that nothing of this thread's but the mapping is made in
    // between.
    let mapping = if backing.hugepage_size().is_some() || size < HOST_ALIGNMENT {
        build(builder())?
    } else {
        let mut misplaced = Vec::new();
        loop {
            let next = builder();
            let hole = AlignedHole::new(size);
            let attempt = build(next)?;
            drop(hole);
            // Unaligned after every attempt: the last is as good as any.
            if attempt.as_ptr() as usize % HOST_ALIGNMENT == 0
                || misplaced.len() + 1 == ALIGNMENT_ATTEMPTS
            {
                break attempt;
            }
            misplaced.push(attempt);
        }
    };
    if let Some((image, offset)) = image {
        map_holes_anonymous(&mapping, image, offset, flags).map_err(map_error)?;
    }
    GuestRegionMmap::new(mapping, GuestAddress(spec.guest_addr)).ok_or(Error::AddressOverflow {
        guest_addr: spec.guest_addr,
        size: spec.size,
    })
}

/// Maps each [`HOST_ALIGNMENT`]-aligned 2 MiB of `mapping` (a private mapping of
/// `image` from byte `offset`, just made) where the image has a hole as private
/// anonymous memory instead (`flags`, the backing's, without the file). Both read as
/// zero; but a touch of a hole of a private file mapping first fills it in the file's
/// page cache (on tmpfs: a page allocated, zeroed and kept as long as the file), then
/// copies it when written, so memory the guest never used before cost it twice.
/// Parts of holes smaller than that stay mapped from the image.
fn map_holes_anonymous(
    mapping: &MmapRegion<AtomicBitmap>,
    image: &File,
    offset: u64,
    flags: i32,
) -> io::Result<()> {
    let start = mapping.as_ptr() as usize;
    let end = start + mapping.size();
    // One look per 2 MiB page at most, however the image's data is scattered: from
    // each page not yet known to hold data, the next data found says which pages
    // before it are whole holes, and the page it lies in is skipped.
    let mut page = start.next_multiple_of(HOST_ALIGNMENT);
    while page + HOST_ALIGNMENT <= end {
        let at = offset + (page - start) as u64;
        // The host address of the next data; `end` if there is none in the mapping.
        let data = crate::image::next_data(image, at)?
            .and_then(|data| usize::try_from(data - offset).ok())
            .map_or(end, |data| start.saturating_add(data).min(end));
        let (first, last) = (page, data / HOST_ALIGNMENT * HOST_ALIGNMENT);
        page = data.saturating_add(1).next_multiple_of(HOST_ALIGNMENT);
        if first >= last {
            continue;
        }
        // SAFETY: `first..last` lies inside `mapping`, which its caller has just made
        // and nothing has touched or shared yet; MAP_FIXED replaces those pages of it
        // with anonymous ones that read as the image's hole does (zero), and the
        // mapping still covers the whole range, which it unmaps when dropped. On an
        // error the range may be left unmapped: the caller then drops the mapping.
        let mapped = unsafe {
            libc::mmap(
                first as *mut libc::c_void,
                last - first,
                libc::PROT_READ | libc::PROT_WRITE,
                flags | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if mapped == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // In 4 KiB pages, as the image's are, unless the RAM asks for transparent
        // hugepages (`thp=on`, advised after this): a restored guest reaches memory it
        // never used here and there, and a hugepage is zeroed whole at its first touch
        // (2 MiB for one page touched, slow where the host CPU is emulated).
        // SAFETY: advice on the range just mapped; it changes paging policy, never the
        // memory's contents.
        unsafe {
            libc::madvise(
                first as *mut libc::c_void,
                last - first,
                libc::MADV_NOHUGEPAGE,
            )
        };
    }
    Ok(())
}

/// The host alignment that lets KVM map guest RAM with 2 MiB pages: a transparent
/// hugepage backs a guest 2 MiB page only where host and guest addresses agree modulo
/// 2 MiB (every region starts 2 MiB-aligned in the guest). Unaligned, every 2 MiB of
/// guest RAM takes 512 nested page faults to map instead of one.
pub const HOST_ALIGNMENT: usize = 2 << 20;

/// How many times a mapping is made again when the kernel placed it outside its
/// aligned hole (in a higher gap, or one another thread's mapping took first).
const ALIGNMENT_ATTEMPTS: usize = 4;

/// A hole of exactly `size` bytes at a [`HOST_ALIGNMENT`]-aligned address, fenced on
/// both sides by inaccessible mappings, for the next `mmap(NULL, size)` (vm-memory's,
/// which takes no address) to fill: the kernel places a mapping in the highest hole
/// that fits it, and this one was cut from the highest hole that fitted `size` and
/// the alignment. Best effort: if the kernel chooses another hole (a higher one that
/// fits `size` alone, or a thread mapped into this one first), the mapping is merely
/// unaligned, as it would have been (the caller tries again, keeping what it got,
/// [`ALIGNMENT_ATTEMPTS`] times in all). Dropping it unmaps the fences.
struct AlignedHole {
    fences: [(usize, usize); 2],
}

impl AlignedHole {
    /// A hole for a mapping of `size` bytes; `None` for one smaller than the alignment
    /// (it cannot hold a hugepage) or if the address space has no room.
    fn new(size: usize) -> Option<Self> {
        if size < HOST_ALIGNMENT {
            return None;
        }
        let reserved = size.checked_add(HOST_ALIGNMENT)?;
        // SAFETY: a new inaccessible private mapping at an address the kernel
        // chooses: it overlaps nothing and nobody else refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                reserved,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        let base = base as usize;
        let hole = base.next_multiple_of(HOST_ALIGNMENT);
        let hole_end = hole + size;
        // SAFETY: `hole..hole_end` lies inside the reservation just made, which
        // nothing else refers to.
        if unsafe { libc::munmap(hole as *mut libc::c_void, size) } != 0 {
            unmap(base, reserved);
            return None;
        }
        Some(AlignedHole {
            fences: [(base, hole - base), (hole_end, base + reserved - hole_end)],
        })
    }
}

impl Drop for AlignedHole {
    fn drop(&mut self) {
        for (start, len) in self.fences {
            unmap(start, len);
        }
    }
}

/// Unmaps `len` bytes at `start`, a range of a reservation only its owner refers to.
fn unmap(start: usize, len: usize) {
    if len > 0 {
        // SAFETY: the callers pass parts of an `AlignedHole` reservation: inaccessible
        // mappings that nothing refers to.
        unsafe { libc::munmap(start as *mut libc::c_void, len) };
    }
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
        let ram = GuestRam::new(&two_region_layout(), &MemoryConfig::default()).unwrap();

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

    fn two_region_layout() -> MemoryLayout {
        MemoryLayout::from_regions(vec![
            RegionSpec {
                guest_addr: 0,
                size: 2 * MIB,
            },
            RegionSpec {
                guest_addr: 16 * MIB,
                size: MIB,
            },
        ])
        .unwrap()
    }

    /// A file of `size` bytes with `marks` (offset, byte) written.
    fn image(size: u64, marks: &[(u64, u8)]) -> vmm_sys_util::tempfile::TempFile {
        use std::os::unix::fs::FileExt;
        let image = vmm_sys_util::tempfile::TempFile::new().unwrap();
        image.as_file().set_len(size).unwrap();
        for &(offset, byte) in marks {
            image.as_file().write_all_at(&[byte], offset).unwrap();
        }
        image
    }

    #[test]
    fn ram_from_an_image_reads_each_region_at_its_place_in_the_image() {
        let image = image(3 * MIB, &[(0x1000, 0x11), (2 * MIB + 0x10, 0x22)]);

        let ram = GuestRam::from_image(
            &two_region_layout(),
            &MemoryConfig::default(),
            image.as_file(),
        )
        .unwrap();

        let read = |addr| ram.memory().read_obj::<u8>(GuestAddress(addr)).unwrap();
        assert_eq!(read(0x1000), 0x11);
        assert_eq!(read(16 * MIB + 0x10), 0x22);
        assert_eq!(read(0x2000), 0);
        assert!(ram.image().is_some());
    }

    #[test]
    fn writes_to_ram_from_an_image_leave_the_image_unchanged() {
        use std::os::unix::fs::FileExt;
        let image = image(3 * MIB, &[(0x1000, 0x11)]);
        let ram = GuestRam::from_image(
            &two_region_layout(),
            &MemoryConfig::default(),
            image.as_file(),
        )
        .unwrap();

        ram.memory()
            .write_obj(0x99u8, GuestAddress(0x1000))
            .unwrap();

        let mut byte = [0u8];
        image.as_file().read_exact_at(&mut byte, 0x1000).unwrap();
        assert_eq!(byte[0], 0x11);
        assert_eq!(
            ram.memory().read_obj::<u8>(GuestAddress(0x1000)).unwrap(),
            0x99
        );
    }

    #[test]
    fn ram_the_guest_never_used_is_not_filled_into_a_tmpfs_image_when_touched() {
        use std::os::unix::fs::{FileExt, MetadataExt};
        // A sparse 8 MiB image on tmpfs (a memfd), data in its first and last MiB.
        let image = crate::backing::memfd(libc::MFD_CLOEXEC).unwrap();
        image.set_len(8 * MIB).unwrap();
        image.write_all_at(&[0x11], 0x1000).unwrap();
        image.write_all_at(&[0x22], 7 * MIB + 0x10).unwrap();
        let blocks = image.metadata().unwrap().blocks();
        let layout = MemoryLayout::from_regions(vec![RegionSpec {
            guest_addr: 0,
            size: 8 * MIB,
        }])
        .unwrap();
        let ram = GuestRam::from_image(&layout, &MemoryConfig::default(), &image).unwrap();
        // The whole 2 MiB pages of the hole, wherever the RAM landed: at least two.
        let host = ram.regions()[0].host_addr as u64;
        let align = HOST_ALIGNMENT as u64;
        let first = (host + 0x2000).next_multiple_of(align) - host;
        let last = (host + 7 * MIB) / align * align - host;
        assert!(last - first >= 4 * MIB);

        for page in (first..last).step_by(4096) {
            ram.memory().write_obj(0x33u8, GuestAddress(page)).unwrap();
        }

        // Without the hole mapped anonymously, each page written would first be
        // allocated and zeroed in the image's page cache (kept there as long as the
        // image lives: twice the memory), then copied.
        assert_eq!(image.metadata().unwrap().blocks(), blocks);
        let read = |addr| ram.memory().read_obj::<u8>(GuestAddress(addr)).unwrap();
        assert_eq!(read(0x1000), 0x11);
        assert_eq!(read(7 * MIB + 0x10), 0x22);
        assert_eq!(read(first), 0x33);
        assert_eq!(read(0x3000), 0);
    }

    #[test]
    fn an_image_shorter_than_guest_ram_is_refused() {
        let image = image(3 * MIB - 4096, &[]);

        let error = GuestRam::from_image(
            &two_region_layout(),
            &MemoryConfig::default(),
            image.as_file(),
        )
        .unwrap_err();

        assert!(matches!(
            error,
            Error::ImageTooShort { length, needed } if length == 3 * MIB - 4096 && needed == 3 * MIB
        ));
    }

    #[test]
    fn shared_memory_cannot_start_from_an_image() {
        let image = image(3 * MIB, &[]);
        let config: MemoryConfig = "shared=on".parse().unwrap();

        let error =
            GuestRam::from_image(&two_region_layout(), &config, image.as_file()).unwrap_err();

        assert!(matches!(error, Error::ImageBacking { .. }), "{error}");
    }

    #[test]
    fn touched_pages_are_the_pages_written_and_unknown_for_shared_memory() {
        let layout = MemoryLayout::x86_64(MIB).unwrap();
        let ram = GuestRam::new(&layout, &MemoryConfig::default()).unwrap();
        let shared = GuestRam::new(&layout, &"shared=on".parse().unwrap()).unwrap();
        ram.memory().write_obj(1u8, GuestAddress(5 * 4096)).unwrap();

        let touched = ram.touched_pages(0).unwrap().unwrap();

        assert_eq!(touched.len(), 256);
        assert!(touched[5]);
        assert_eq!(touched.iter().filter(|&&page| page).count(), 1);
        assert!(shared.touched_pages(0).unwrap().is_none());
        assert!(ram.touched_pages(1).unwrap().is_none());
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
