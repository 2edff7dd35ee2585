// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Where guest RAM lies in the guest-physical address space.

use crate::x86::MMIO_HOLE;
use crate::Error;

/// One contiguous range of guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegionSpec {
    /// Guest-physical address of the first byte.
    pub guest_addr: u64,
    /// Size in bytes.
    pub size: u64,
}

impl RegionSpec {
    /// `size` bytes of RAM from guest-physical `guest_addr`.
    pub const fn new(guest_addr: u64, size: u64) -> Self {
        RegionSpec { guest_addr, size }
    }

    /// The first guest-physical address past the region.
    pub fn end(&self) -> u64 {
        self.guest_addr + self.size
    }

    /// Whether the guest-physical address `addr` lies in this region.
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.guest_addr && addr < self.end()
    }
}

/// The guest RAM regions of a VM, sorted and non-overlapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLayout {
    regions: Vec<RegionSpec>,
}

impl MemoryLayout {
    /// The PC layout for `size` bytes of RAM: RAM from 0 up to the MMIO hole at
    /// the start of the [`MMIO_HOLE`], and whatever does not fit below the hole from 4 GiB up.
    ///
    /// ```
    /// use kvmkit_memory::{MemoryLayout, RegionSpec};
    ///
    /// let layout = MemoryLayout::x86_64(4 << 30).unwrap();
    /// assert_eq!(
    ///     layout.regions(),
    ///     &[RegionSpec::new(0, 3 << 30), RegionSpec::new(4 << 30, 1 << 30)]
    /// );
    /// ```
    pub fn x86_64(size: u64) -> Result<Self, Error> {
        let low = size.min(MMIO_HOLE.start);
        let mut regions = vec![RegionSpec {
            guest_addr: 0,
            size: low,
        }];
        if size > low {
            regions.push(RegionSpec {
                guest_addr: MMIO_HOLE.end(),
                size: size - low,
            });
        }
        Self::from_regions(regions)
    }

    /// A layout of the given regions, which must be non-empty, page-aligned, sorted and
    /// non-overlapping.
    pub fn from_regions(regions: Vec<RegionSpec>) -> Result<Self, Error> {
        if regions.is_empty() {
            return Err(Error::EmptyLayout);
        }
        let page_size = host_page_size();
        for region in &regions {
            check_region(region, page_size)?;
        }
        let total = regions
            .iter()
            .try_fold(0u64, |total, region| total.checked_add(region.size));
        if total.is_none_or(|total| total > MAX_GUEST_MEMORY) {
            return Err(Error::TooLarge {
                size: total.unwrap_or(u64::MAX),
                max: MAX_GUEST_MEMORY,
            });
        }
        for pair in regions.windows(2) {
            if pair[1].guest_addr < pair[0].end() {
                return Err(Error::Overlap {
                    first: pair[0].guest_addr,
                    second: pair[1].guest_addr,
                });
            }
        }
        Ok(MemoryLayout { regions })
    }

    /// The regions, sorted by guest-physical address.
    pub fn regions(&self) -> &[RegionSpec] {
        &self.regions
    }

    /// Total bytes of RAM.
    pub fn total_size(&self) -> u64 {
        self.regions.iter().map(|r| r.size).sum()
    }

    /// Whether `addr` is guest RAM in this layout (and not a hole).
    pub fn is_ram(&self, addr: u64) -> bool {
        self.regions.iter().any(|r| r.contains(addr))
    }
}

/// The most guest RAM a layout may hold: 64 TiB, half of an x86-64 process's 128 TiB of
/// user address space, where every byte of it is mapped. (Its dirty bitmap, one bit per
/// 4 KiB page, takes 1/32768 of it: 32 KiB a GiB, 2 GiB at this bound.)
pub const MAX_GUEST_MEMORY: u64 = 64 << 40;

fn check_region(region: &RegionSpec, page_size: u64) -> Result<(), Error> {
    if region.size == 0 {
        return Err(Error::EmptyRegion {
            guest_addr: region.guest_addr,
        });
    }
    if region.guest_addr.checked_add(region.size).is_none() {
        return Err(Error::AddressOverflow {
            guest_addr: region.guest_addr,
            size: region.size,
        });
    }
    if region.guest_addr % page_size != 0 || region.size % page_size != 0 {
        return Err(Error::Unaligned {
            guest_addr: region.guest_addr,
            size: region.size,
            page_size,
        });
    }
    Ok(())
}

/// The host's base page size.
pub(crate) fn host_page_size() -> u64 {
    // SAFETY: sysconf has no side effects and _SC_PAGESIZE is always supported.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn small_x86_layout_is_one_region_from_zero() {
        let layout = MemoryLayout::x86_64(512 * MIB).unwrap();

        assert_eq!(
            layout.regions(),
            &[RegionSpec {
                guest_addr: 0,
                size: 512 * MIB
            }]
        );
    }

    #[test]
    fn x86_layout_that_exactly_fills_low_memory_has_no_high_region() {
        let layout = MemoryLayout::x86_64(3 * GIB).unwrap();

        assert_eq!(layout.regions().len(), 1);
        assert!(!layout.is_ram(MMIO_HOLE.start));
    }

    #[test]
    fn large_x86_layout_skips_the_mmio_hole() {
        let layout = MemoryLayout::x86_64(6 * GIB).unwrap();

        assert_eq!(layout.total_size(), 6 * GIB);
        assert!(layout.is_ram(MMIO_HOLE.start - 1));
        assert!(!layout.is_ram(MMIO_HOLE.start));
        assert!(!layout.is_ram(MMIO_HOLE.end() - 1));
        assert!(layout.is_ram(MMIO_HOLE.end()));
        assert_eq!(layout.regions()[1].end(), MMIO_HOLE.end() + 3 * GIB);
    }

    #[test]
    fn zero_sized_x86_layout_is_refused() {
        assert!(matches!(
            MemoryLayout::x86_64(0),
            Err(Error::EmptyRegion { guest_addr: 0 })
        ));
    }

    #[test]
    fn unaligned_region_is_refused() {
        let result = MemoryLayout::x86_64(MIB + 1);

        assert!(matches!(result, Err(Error::Unaligned { size, .. }) if size == MIB + 1));
    }

    #[test]
    fn overlapping_regions_are_refused() {
        let regions = vec![
            RegionSpec {
                guest_addr: 0,
                size: 2 * MIB,
            },
            RegionSpec {
                guest_addr: MIB,
                size: MIB,
            },
        ];

        let result = MemoryLayout::from_regions(regions);

        assert!(matches!(
            result,
            Err(Error::Overlap {
                first: 0,
                second: MIB
            })
        ));
    }

    #[test]
    fn region_wrapping_the_address_space_is_refused() {
        let regions = vec![RegionSpec {
            guest_addr: u64::MAX - 4095,
            size: 8192,
        }];

        assert!(matches!(
            MemoryLayout::from_regions(regions),
            Err(Error::AddressOverflow { .. })
        ));
    }

    #[test]
    fn empty_layout_is_refused() {
        assert!(matches!(
            MemoryLayout::from_regions(Vec::new()),
            Err(Error::EmptyLayout)
        ));
    }

    #[test]
    fn a_size_past_what_a_process_maps_is_refused_before_anything_is_mapped() {
        let absurd = 99_999_999u64 << 30;

        let refused = MemoryLayout::x86_64(absurd);
        let largest = MemoryLayout::x86_64(MAX_GUEST_MEMORY);

        assert!(
            matches!(refused, Err(Error::TooLarge { size, max: MAX_GUEST_MEMORY }) if size == absurd),
            "{refused:?}"
        );
        assert!(largest.is_ok());
    }
}
