// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What the kernel actually did with guest RAM, read back from `/proc/self/smaps`.

use std::fmt;

use crate::config::format_size;
use crate::host::KsmCounters;
use crate::{Error, GuestRam, RamRegion};

/// The `VmFlags` of a mapping that matter for guest RAM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VmFlags {
    /// `mg`: advised `MADV_MERGEABLE` (KSM may merge it).
    pub mergeable: bool,
    /// `hg`: advised `MADV_HUGEPAGE` (transparent hugepages).
    pub hugepage: bool,
    /// `nh`: advised `MADV_NOHUGEPAGE`.
    pub no_hugepage: bool,
    /// `ht`: a hugetlb mapping.
    pub hugetlb: bool,
    /// `sh`: a shared mapping.
    pub shared: bool,
    /// `nr`: mapped `MAP_NORESERVE` (no swap or commit reserved for it).
    pub no_reserve: bool,
}

impl VmFlags {
    fn parse(text: &str) -> Self {
        let mut flags = VmFlags::default();
        for flag in text.split_whitespace() {
            match flag {
                "mg" => flags.mergeable = true,
                "hg" => flags.hugepage = true,
                "nh" => flags.no_hugepage = true,
                "ht" => flags.hugetlb = true,
                "sh" => flags.shared = true,
                "nr" => flags.no_reserve = true,
                _ => {}
            }
        }
        flags
    }
}

impl fmt::Display for VmFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [
            (self.shared, "sh"),
            (self.hugetlb, "ht"),
            (self.hugepage, "hg"),
            (self.no_hugepage, "nh"),
            (self.mergeable, "mg"),
            (self.no_reserve, "nr"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        if names.is_empty() {
            f.write_str("-")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

/// One guest RAM region as the kernel sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegionReport {
    /// Guest-physical start.
    pub guest_addr: u64,
    /// Start in the VMM process.
    pub host_addr: u64,
    /// Size in bytes.
    pub size: u64,
    /// `KernelPageSize`: the page size the kernel maps this memory with, in bytes.
    pub kernel_page_size: u64,
    /// Bytes of the region backed by host memory now, whatever the page kind, counted
    /// page by page with `mincore`.
    pub resident: u64,
    /// `AnonHugePages`: bytes resident in transparent hugepages. Like `hugetlb`, this
    /// counts whole kernel mappings: if the kernel merged a neighbouring mapping of the
    /// process into the region's, its pages count too.
    pub anon_huge_pages: u64,
    /// `Private_Hugetlb` + `Shared_Hugetlb`: bytes resident in hugetlb pages.
    pub hugetlb: u64,
    /// `Rss`: bytes of the region mapped into the process and so counted in its RSS
    /// (hugetlb pages are not; a page of a file mapping is only once the guest touched
    /// it, whether or not the page cache holds it). Counts whole kernel mappings, as
    /// `anon_huge_pages` does.
    pub rss: u64,
    /// The mapping's flags (of its first VMA).
    pub flags: VmFlags,
    /// How many kernel VMAs the region spans.
    pub vmas: usize,
}

impl fmt::Display for RegionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gpa={:#x} size={} page_kib={} resident_kib={} rss_kib={} anon_huge_kib={} hugetlb_kib={} flags={} vmas={}",
            self.guest_addr,
            format_size(self.size),
            self.kernel_page_size >> 10,
            self.resident >> 10,
            self.rss >> 10,
            self.anon_huge_pages >> 10,
            self.hugetlb >> 10,
            self.flags,
            self.vmas
        )
    }
}

/// What the kernel did for each guest RAM region, and KSM's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryReport {
    /// One entry per region, in guest address order.
    pub regions: Vec<RegionReport>,
    /// KSM's state, if the kernel has KSM.
    pub ksm: Option<KsmCounters>,
    /// The whole process's RSS (the sum of every mapping's `Rss` in the same read of
    /// smaps), guest RAM included.
    pub process_rss: u64,
}

impl GuestRam {
    /// What the kernel actually did for each region: page size, resident memory,
    /// hugepages, advice flags, from `/proc/self/smaps`, and the KSM counters.
    pub fn report(&self) -> Result<MemoryReport, Error> {
        MemoryReport::read(self.regions())
    }
}

impl MemoryReport {
    pub(crate) fn read(regions: &[RamRegion]) -> Result<Self, Error> {
        let smaps =
            std::fs::read_to_string("/proc/self/smaps").map_err(|source| Error::Report {
                what: "cannot read /proc/self/smaps".into(),
                source,
            })?;
        Ok(MemoryReport {
            regions: parse_smaps(&smaps, regions, resident_bytes)?,
            ksm: KsmCounters::read(),
            process_rss: parse_vmas(&smaps).iter().map(|vma| vma.rss).sum(),
        })
    }

    /// Bytes of guest RAM resident, over all regions.
    pub fn resident(&self) -> u64 {
        self.regions.iter().map(|r| r.resident).sum()
    }

    /// The VMM's own memory: the process's RSS less the guest RAM counted in it.
    pub fn vmm_overhead(&self) -> u64 {
        let guest: u64 = self.regions.iter().map(|r| r.rss).sum();
        self.process_rss.saturating_sub(guest)
    }
}

impl fmt::Display for MemoryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for region in &self.regions {
            writeln!(f, "region {region}")?;
        }
        writeln!(
            f,
            "process rss_kib={} vmm_overhead_kib={}",
            self.process_rss >> 10,
            self.vmm_overhead() >> 10
        )?;
        if let Some(ksm) = &self.ksm {
            write!(
                f,
                "ksm run={} pages_shared={} pages_sharing={} full_scans={}",
                ksm.run, ksm.pages_shared, ksm.pages_sharing, ksm.full_scans
            )?;
            if let Some(pages) = ksm.process_merging_pages {
                write!(f, " process_merging_pages={pages}")?;
            }
        }
        Ok(())
    }
}

/// One VMA of smaps: its range and the fields the report uses.
#[derive(Debug, Default)]
struct Vma {
    start: u64,
    end: u64,
    kernel_page_size: u64,
    anon_huge_pages: u64,
    hugetlb: u64,
    rss: u64,
    flags: VmFlags,
}

fn parse_vmas(smaps: &str) -> Vec<Vma> {
    let mut vmas: Vec<Vma> = Vec::new();
    for line in smaps.lines() {
        if let Some((start, end)) = vma_header(line) {
            vmas.push(Vma {
                start,
                end,
                ..Vma::default()
            });
            continue;
        }
        let Some(vma) = vmas.last_mut() else { continue };
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        if key == "VmFlags" {
            vma.flags = VmFlags::parse(value);
            continue;
        }
        let kib = value
            .trim()
            .strip_suffix("kB")
            .and_then(|n| n.trim().parse::<u64>().ok());
        let Some(bytes) = kib.map(|k| k << 10) else {
            continue;
        };
        match key {
            "KernelPageSize" => vma.kernel_page_size = bytes,
            "AnonHugePages" => vma.anon_huge_pages = bytes,
            "Rss" => vma.rss = bytes,
            "Private_Hugetlb" | "Shared_Hugetlb" => vma.hugetlb += bytes,
            _ => {}
        }
    }
    vmas
}

/// `7f0000000000-7f0000200000 rw-p ...` → (start, end).
fn vma_header(line: &str) -> Option<(u64, u64)> {
    let range = line.split_whitespace().next()?;
    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    Some((start, end))
}

/// Builds one report per region from the smaps text and `resident`, which counts a
/// region's resident bytes.
fn parse_smaps(
    smaps: &str,
    regions: &[RamRegion],
    resident: impl Fn(&RamRegion) -> Result<u64, Error>,
) -> Result<Vec<RegionReport>, Error> {
    let vmas = parse_vmas(smaps);
    regions
        .iter()
        .map(|region| {
            let start = region.host_addr as u64;
            let end = start + region.spec.size;
            let inside: Vec<&Vma> = vmas
                .iter()
                .filter(|vma| vma.start < end && vma.end > start)
                .collect();
            let first = inside.first().ok_or_else(|| Error::Report {
                what: format!(
                    "no mapping at {start:#x} in /proc/self/smaps for guest address {:#x}",
                    region.spec.guest_addr
                ),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })?;
            Ok(RegionReport {
                guest_addr: region.spec.guest_addr,
                host_addr: start,
                size: region.spec.size,
                kernel_page_size: first.kernel_page_size,
                resident: resident(region)?,
                anon_huge_pages: inside.iter().map(|v| v.anon_huge_pages).sum(),
                hugetlb: inside.iter().map(|v| v.hugetlb).sum(),
                rss: inside.iter().map(|v| v.rss).sum(),
                flags: first.flags,
                vmas: inside.len(),
            })
        })
        .collect()
}

/// Bytes of `region` resident in host memory, from `mincore`, a chunk at a time.
fn resident_bytes(region: &RamRegion) -> Result<u64, Error> {
    const CHUNK: u64 = 1 << 30;
    let page = crate::layout::host_page_size();
    let mut resident_pages = 0;
    let mut vec = Vec::new();
    let mut offset = 0;
    while offset < region.spec.size {
        let len = CHUNK.min(region.spec.size - offset);
        // At most CHUNK (1 GiB) bytes: a length and a page count any usize holds.
        let bytes = usize::try_from(len).unwrap_or(usize::MAX);
        vec.resize(usize::try_from(len.div_ceil(page)).unwrap_or(0), 0u8);
        let addr = (region.host_addr as u64 + offset) as *mut libc::c_void;
        // SAFETY: `addr..addr + len` lies inside the region's live mapping, and `vec`
        // holds one byte per page of it, as mincore requires.
        let ret = unsafe { libc::mincore(addr, bytes, vec.as_mut_ptr()) };
        if ret != 0 {
            return Err(Error::Report {
                what: format!("mincore on guest memory at {:#x}", region.spec.guest_addr),
                source: std::io::Error::last_os_error(),
            });
        }
        resident_pages += vec.iter().filter(|&&b| b & 1 != 0).count() as u64;
        offset += len;
    }
    Ok(resident_pages * page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RegionSpec;

    const SMAPS: &str = "\
55d000000000-55d000001000 r--p 00000000 fd:00 123 /usr/bin/vmm
Size:                  4 kB
KernelPageSize:        4 kB
Rss:                   4 kB
VmFlags: rd mr mw me
7f0000000000-7f0000400000 rw-p 00000000 00:00 0
Size:               4096 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Rss:                4096 kB
AnonHugePages:      4096 kB
Private_Hugetlb:       0 kB
VmFlags: rd wr mr mw me ac hg mg
7f0000400000-7f0000800000 rw-s 00000000 00:10 77 /dev/hugepages/x (deleted)
Size:               4096 kB
KernelPageSize:     2048 kB
Rss:                   0 kB
AnonHugePages:         0 kB
Shared_Hugetlb:     2048 kB
Private_Hugetlb:       0 kB
VmFlags: rd wr sh mr mw me ms de ht
";

    fn region(guest_addr: u64, host_addr: usize, size: u64) -> RamRegion {
        RamRegion {
            spec: RegionSpec { guest_addr, size },
            host_addr,
        }
    }

    #[test]
    fn thp_region_reports_rss_huge_pages_and_advice_flags() {
        let regions = [region(0, 0x7f00_0000_0000, 4 << 20)];

        let report = parse_smaps(SMAPS, &regions, |_| Ok(4 << 20)).unwrap();

        assert_eq!(report[0].kernel_page_size, 4096);
        assert_eq!(report[0].resident, 4 << 20);
        assert_eq!(report[0].anon_huge_pages, 4 << 20);
        assert!(report[0].flags.mergeable && report[0].flags.hugepage);
        assert!(!report[0].flags.hugetlb);
        assert_eq!(report[0].vmas, 1);
    }

    #[test]
    fn hugetlb_region_reports_kernel_page_size_and_hugetlb_residency() {
        let regions = [region(1 << 32, 0x7f00_0040_0000, 4 << 20)];

        let report = parse_smaps(SMAPS, &regions, |_| Ok(0)).unwrap();

        assert_eq!(report[0].kernel_page_size, 2 << 20);
        assert_eq!(report[0].hugetlb, 2 << 20);
        assert!(report[0].flags.hugetlb && report[0].flags.shared);
    }

    #[test]
    fn region_split_over_vmas_sums_them() {
        let regions = [region(0, 0x7f00_0000_0000, 8 << 20)];

        let report = parse_smaps(SMAPS, &regions, |_| Ok(0)).unwrap();

        assert_eq!(report[0].vmas, 2);
        assert_eq!(report[0].anon_huge_pages, 4 << 20);
        assert_eq!(report[0].hugetlb, 2 << 20);
        assert_eq!(report[0].rss, 4 << 20, "hugetlb pages are not in Rss");
    }

    #[test]
    fn the_vmm_overhead_is_the_process_rss_less_the_guest_ram_in_it() {
        let regions = [region(0, 0x7f00_0000_0000, 4 << 20)];
        let report = MemoryReport {
            regions: parse_smaps(SMAPS, &regions, |_| Ok(4 << 20)).unwrap(),
            ksm: None,
            process_rss: parse_vmas(SMAPS).iter().map(|vma| vma.rss).sum(),
        };

        assert_eq!(report.process_rss, (4 << 20) + 4096);
        assert_eq!(report.vmm_overhead(), 4096, "the binary's page");
    }

    #[test]
    fn region_without_a_mapping_is_an_error() {
        let regions = [region(0, 0x1000, 4096)];

        assert!(matches!(
            parse_smaps(SMAPS, &regions, |_| Ok(0)),
            Err(Error::Report { .. })
        ));
    }

    #[test]
    fn mincore_counts_only_the_pages_touched() {
        let layout = crate::MemoryLayout::x86_64(1 << 20).unwrap();
        let ram = crate::GuestRam::new(&layout, &crate::MemoryConfig::default()).unwrap();
        let base = ram.regions()[0].host_addr;
        for page in [0usize, 5, 200] {
            // SAFETY: the page lies inside the live 1 MiB mapping owned by `ram`.
            unsafe { std::ptr::write_volatile((base + page * 4096) as *mut u8, 1) };
        }

        let resident = resident_bytes(&ram.regions()[0]).unwrap();

        assert_eq!(resident, 3 * 4096);
    }

    #[test]
    fn flags_display_lists_only_the_set_ones() {
        let flags = VmFlags::parse("rd wr mr mw me ac hg mg");
        let unreserved = VmFlags::parse("rd wr mr mw me nr sd");

        assert_eq!(flags.to_string(), "hg,mg");
        assert!(!flags.no_reserve);
        assert!(unreserved.no_reserve);
        assert_eq!(unreserved.to_string(), "nr");
        assert_eq!(VmFlags::default().to_string(), "-");
    }
}
