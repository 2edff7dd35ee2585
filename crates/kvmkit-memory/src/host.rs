// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What the host offers: hugepage pools, hugetlbfs mounts, THP and KSM settings.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Bytes the host can give a new workload without swapping (`MemAvailable` in
/// `/proc/meminfo`), if the kernel says.
pub fn mem_available() -> Option<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemAvailable:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// Where the kernel describes its hugepage pools.
pub const HUGEPAGES_SYSFS: &str = "/sys/kernel/mm/hugepages";
/// Where the kernel exposes KSM's controls and counters.
pub const KSM_SYSFS: &str = "/sys/kernel/mm/ksm";

/// One hugetlb page size's pool, from `/sys/kernel/mm/hugepages/hugepages-<N>kB`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HugePagePool {
    /// The page size in bytes.
    pub page_size: u64,
    /// Pages in the pool (`nr_hugepages`, surplus pages included).
    pub total: u64,
    /// Pages not yet faulted in (including reserved ones).
    pub free: u64,
    /// Pages reserved by mappings but not yet faulted in.
    pub reserved: u64,
    /// Surplus pages the kernel has allocated beyond the persistent pool.
    pub surplus: u64,
    /// The most surplus pages the kernel may allocate (`nr_overcommit_hugepages`).
    pub overcommit: u64,
}

impl HugePagePool {
    /// Pages a new mapping can still reserve: the free pages no mapping has reserved,
    /// plus the surplus pages the kernel may still allocate on demand.
    pub fn available(&self) -> u64 {
        let unreserved = self.free.saturating_sub(self.reserved);
        unreserved + self.overcommit.saturating_sub(self.surplus)
    }

    /// The sysfs directory of this pool.
    pub fn sysfs_dir(&self) -> PathBuf {
        sysfs_dir(self.page_size)
    }

    /// Reads the pool for `page_size`, or `None` if the host has no such pool.
    pub fn read(page_size: u64) -> Option<Self> {
        let dir = sysfs_dir(page_size);
        let read = |name: &str| -> Option<u64> {
            fs::read_to_string(dir.join(name)).ok()?.trim().parse().ok()
        };
        Some(HugePagePool {
            page_size,
            total: read("nr_hugepages")?,
            free: read("free_hugepages")?,
            reserved: read("resv_hugepages")?,
            surplus: read("surplus_hugepages").unwrap_or(0),
            overcommit: read("nr_overcommit_hugepages").unwrap_or(0),
        })
    }
}

fn sysfs_dir(page_size: u64) -> PathBuf {
    Path::new(HUGEPAGES_SYSFS).join(format!("hugepages-{}kB", page_size >> 10))
}

/// The hugetlb page sizes this host supports, in bytes, smallest first.
pub fn hugepage_sizes() -> Vec<u64> {
    let Ok(entries) = fs::read_dir(HUGEPAGES_SYSFS) else {
        return Vec::new();
    };
    let mut sizes: Vec<u64> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let kib = name
                .to_str()?
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?;
            kib.parse::<u64>().ok().map(|kib| kib << 10)
        })
        .collect();
    sizes.sort_unstable();
    sizes
}

/// The default hugetlb page size (`Hugepagesize` in `/proc/meminfo`), in bytes.
pub fn default_hugepage_size() -> Option<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    meminfo.lines().find_map(|line| {
        let kib = line
            .strip_prefix("Hugepagesize:")?
            .trim()
            .strip_suffix("kB")?;
        kib.trim().parse::<u64>().ok().map(|kib| kib << 10)
    })
}

/// What `statfs` says of the file system holding a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FsStats {
    /// The file system's magic number.
    pub fs_type: i64,
    /// Its block size: the page size, for hugetlbfs.
    pub block_size: u64,
    /// Blocks in all: a hugetlbfs mount's `size=` limit in pages, 0 without a limit.
    pub blocks: u64,
    /// Blocks still free under that limit.
    pub blocks_free: u64,
}

/// The hugetlbfs mount points of this host, from `/proc/mounts`.
pub fn hugetlbfs_mounts() -> Vec<PathBuf> {
    let Ok(mounts) = fs::read_to_string("/proc/mounts") else {
        return Vec::new();
    };
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let mount_point = fields.nth(1)?;
            (fields.next()? == "hugetlbfs").then(|| PathBuf::from(mount_point))
        })
        .collect()
}

/// What `statfs` says of the file system holding `path`.
pub(crate) fn statfs(path: &Path) -> io::Result<FsStats> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: statfs is plain data; all-zero is a valid value to be overwritten.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a NUL-terminated string and `stat` a valid out-pointer.
    let ret = unsafe { libc::statfs(c_path.as_ptr(), &mut stat) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(FsStats {
        fs_type: stat.f_type as i64,
        block_size: stat.f_bsize as u64,
        blocks: stat.f_blocks as u64,
        blocks_free: stat.f_bfree as u64,
    })
}

/// The hugetlbfs magic number in `statfs.f_type`.
pub(crate) const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// KSM's global state and counters, from `/sys/kernel/mm/ksm`, and this process's
/// merged pages from `/proc/self/ksm_stat`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KsmCounters {
    /// `run`: 0 stopped, 1 running, 2 unmerging.
    pub run: u64,
    /// Shared pages in use (each stands for several guest pages).
    pub pages_shared: u64,
    /// Guest pages that point at a shared page: the pages saved.
    pub pages_sharing: u64,
    /// Pages scanned but not (yet) merged.
    pub pages_unshared: u64,
    /// Full scans of all mergeable memory completed.
    pub full_scans: u64,
    /// This process's pages merged by KSM (`ksm_merging_pages`), if the kernel says.
    pub process_merging_pages: Option<u64>,
}

impl KsmCounters {
    /// Reads the counters, or `None` when the kernel has no KSM.
    pub fn read() -> Option<Self> {
        let dir = Path::new(KSM_SYSFS);
        let read = |name: &str| -> Option<u64> {
            fs::read_to_string(dir.join(name)).ok()?.trim().parse().ok()
        };
        let process_merging_pages =
            fs::read_to_string("/proc/self/ksm_stat")
                .ok()
                .and_then(|text| {
                    text.lines().find_map(|line| {
                        line.strip_prefix("ksm_merging_pages")?.trim().parse().ok()
                    })
                });
        Some(KsmCounters {
            run: read("run")?,
            pages_shared: read("pages_shared")?,
            pages_sharing: read("pages_sharing")?,
            pages_unshared: read("pages_unshared").unwrap_or(0),
            full_scans: read("full_scans").unwrap_or(0),
            process_merging_pages,
        })
    }
}

/// KSM scanning turned on (fast) while this guard lives, with the previous settings
/// put back when it is dropped. Needs root, and changes host-wide settings: it is for
/// tests and demonstrations, behind the `test-utils` feature.
///
/// Scanning 5000 pages every 10 ms makes merging visible within seconds; production
/// hosts tune KSM for their own load.
#[cfg(feature = "test-utils")]
#[derive(Debug)]
pub struct KsmScanning {
    saved: Vec<(&'static str, String)>,
}

#[cfg(feature = "test-utils")]
impl KsmScanning {
    /// Saves `run`, `pages_to_scan` and `sleep_millisecs`, then starts fast scanning.
    /// Fails with the file and the reason (no KSM in this kernel, not root); settings
    /// already changed are restored.
    pub fn start() -> Result<Self, crate::Error> {
        let mut saved = Vec::new();
        for key in ["run", "pages_to_scan", "sleep_millisecs"] {
            let path = Path::new(KSM_SYSFS).join(key);
            let value = fs::read_to_string(&path).map_err(|source| crate::Error::Ksm {
                path: path.display().to_string(),
                fix: "this kernel has no KSM (CONFIG_KSM)",
                source,
            })?;
            saved.push((key, value.trim().to_string()));
        }
        let scanning = KsmScanning { saved };
        for (key, value) in [
            ("pages_to_scan", "5000"),
            ("sleep_millisecs", "10"),
            ("run", "1"),
        ] {
            let path = Path::new(KSM_SYSFS).join(key);
            fs::write(&path, value).map_err(|source| crate::Error::Ksm {
                path: path.display().to_string(),
                fix: "cannot turn KSM scanning on: run as root",
                source,
            })?;
        }
        Ok(scanning)
    }
}

#[cfg(feature = "test-utils")]
impl Drop for KsmScanning {
    fn drop(&mut self) {
        for (key, value) in &self.saved {
            // Nothing useful can be done if the kernel refuses while restoring.
            let _ = fs::write(Path::new(KSM_SYSFS).join(key), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_directory_names_the_size_in_kib() {
        assert_eq!(
            sysfs_dir(2 << 20),
            PathBuf::from("/sys/kernel/mm/hugepages/hugepages-2048kB")
        );
    }

    fn pool(free: u64, reserved: u64, surplus: u64, overcommit: u64) -> HugePagePool {
        HugePagePool {
            page_size: 2 << 20,
            total: 10,
            free,
            reserved,
            surplus,
            overcommit,
        }
    }

    #[test]
    fn available_pages_exclude_reserved_ones() {
        assert_eq!(pool(8, 3, 0, 0).available(), 5);
    }

    #[test]
    fn available_pages_include_the_surplus_the_kernel_may_still_allocate() {
        // nr_overcommit_hugepages=8 with 4 free pages: 8 MiB of 2 MiB pages would fit
        // in the free pages, 16 MiB needs 4 surplus pages the kernel will allocate.
        assert_eq!(pool(4, 0, 0, 8).available(), 12);
        assert_eq!(pool(4, 0, 3, 8).available(), 9);
        assert_eq!(pool(0, 0, 9, 8).available(), 0);
    }

    #[test]
    fn proc_root_is_not_hugetlbfs() {
        let stats = statfs(Path::new("/proc")).unwrap();

        assert_ne!(stats.fs_type, HUGETLBFS_MAGIC);
    }
}
