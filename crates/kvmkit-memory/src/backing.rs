// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The kind of host memory behind guest RAM, resolved and checked from a
//! [`MemoryConfig`] before anything is mapped.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};

use crate::config::format_size;
use crate::host::{self, HugePagePool, HUGETLBFS_MAGIC};
use crate::{Error, MemoryConfig, MemoryLayout, RegionSpec};

/// The host memory behind guest RAM.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backing {
    /// Private anonymous memory (`MAP_PRIVATE | MAP_ANONYMOUS`), 4 KiB pages (or
    /// transparent hugepages with `thp=on`). The default.
    Anonymous,
    /// A memfd mapped `MAP_SHARED`, which another process can map too.
    SharedMemfd,
    /// Private anonymous hugetlb memory (`MAP_HUGETLB` with the page size encoded).
    AnonymousHugetlb {
        /// The hugepage size in bytes.
        page_size: u64,
    },
    /// A hugetlb memfd (`MFD_HUGETLB`) mapped `MAP_SHARED`.
    SharedHugetlbMemfd {
        /// The hugepage size in bytes.
        page_size: u64,
    },
    /// An unlinked file in a hugetlbfs directory, like QEMU's `-mem-path`.
    HugetlbfsFile {
        /// The hugetlbfs directory.
        dir: PathBuf,
        /// The mount's page size in bytes.
        page_size: u64,
        /// `MAP_SHARED` rather than `MAP_PRIVATE`.
        shared: bool,
    },
}

impl Backing {
    /// Checks `config` against `layout` and the host, and returns the backing it asks
    /// for. Every error says what to change; nothing is mapped.
    pub fn resolve(config: &MemoryConfig, layout: &MemoryLayout) -> Result<Self, Error> {
        check_conflicts(config)?;
        let backing = if let Some(dir) = &config.mem_path {
            let page_size = hugetlbfs_page_size(dir)?;
            if let Some(asked) = config.hugepage_size {
                if asked != page_size {
                    return Err(Error::Conflict(format!(
                        "hugepage_size={} but the hugetlbfs mount at {} has {} pages",
                        format_size(asked),
                        dir.display(),
                        format_size(page_size)
                    )));
                }
            }
            Backing::HugetlbfsFile {
                dir: dir.clone(),
                page_size,
                shared: config.shared,
            }
        } else if config.hugepages {
            let page_size = supported_hugepage_size(config.hugepage_size)?;
            if config.shared {
                Backing::SharedHugetlbMemfd { page_size }
            } else {
                Backing::AnonymousHugetlb { page_size }
            }
        } else if config.shared {
            Backing::SharedMemfd
        } else {
            Backing::Anonymous
        };
        if let Some(page_size) = backing.hugepage_size() {
            check_hugepage_alignment(layout, page_size)?;
            check_pool(layout, page_size)?;
        }
        Ok(backing)
    }

    /// The hugetlb page size, for hugetlb backings.
    pub fn hugepage_size(&self) -> Option<u64> {
        match self {
            Backing::AnonymousHugetlb { page_size }
            | Backing::SharedHugetlbMemfd { page_size }
            | Backing::HugetlbfsFile { page_size, .. } => Some(*page_size),
            Backing::Anonymous | Backing::SharedMemfd => None,
        }
    }

    /// Whether the memory is mapped `MAP_SHARED`.
    pub fn is_shared(&self) -> bool {
        match self {
            Backing::SharedMemfd | Backing::SharedHugetlbMemfd { .. } => true,
            Backing::HugetlbfsFile { shared, .. } => *shared,
            Backing::Anonymous | Backing::AnonymousHugetlb { .. } => false,
        }
    }

    /// The mmap flags for a region of this backing.
    pub(crate) fn mmap_flags(&self, reserve: bool) -> i32 {
        let sharing = if self.is_shared() {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE
        };
        // Hugetlb memory is always reserved at mmap time: without a reservation a
        // fault on an exhausted pool kills the VM with SIGBUS long after it started.
        let noreserve = if reserve || self.hugepage_size().is_some() {
            0
        } else {
            libc::MAP_NORESERVE
        };
        let anonymous = match self {
            Backing::Anonymous => libc::MAP_ANONYMOUS,
            Backing::AnonymousHugetlb { page_size } => {
                libc::MAP_ANONYMOUS
                    | libc::MAP_HUGETLB
                    | huge_size_bits(*page_size, libc::MAP_HUGE_SHIFT)
            }
            _ => 0,
        };
        sharing | noreserve | anonymous
    }

    /// The file to map for `region`, for file-backed backings.
    pub(crate) fn create_file(&self, region: &RegionSpec) -> Result<Option<File>, Error> {
        let memfd_flags = match self {
            Backing::Anonymous | Backing::AnonymousHugetlb { .. } => return Ok(None),
            Backing::SharedMemfd => libc::MFD_CLOEXEC,
            Backing::SharedHugetlbMemfd { page_size } => {
                libc::MFD_CLOEXEC
                    | libc::MFD_HUGETLB
                    | huge_size_bits(*page_size, libc::MFD_HUGE_SHIFT as i32) as u32
            }
            Backing::HugetlbfsFile { dir, .. } => {
                return hugetlbfs_file(dir, region).map(Some);
            }
        };
        let file = memfd(memfd_flags).map_err(|source| Error::Memfd {
            guest_addr: region.guest_addr,
            source,
        })?;
        file.set_len(region.size).map_err(|source| Error::Memfd {
            guest_addr: region.guest_addr,
            source,
        })?;
        Ok(Some(file))
    }
}

impl fmt::Display for Backing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backing::Anonymous => f.write_str("anonymous private"),
            Backing::SharedMemfd => f.write_str("shared memfd"),
            Backing::AnonymousHugetlb { page_size } => {
                write!(f, "anonymous hugetlb {}", format_size(*page_size))
            }
            Backing::SharedHugetlbMemfd { page_size } => {
                write!(f, "shared hugetlb memfd {}", format_size(*page_size))
            }
            Backing::HugetlbfsFile {
                dir,
                page_size,
                shared,
            } => write!(
                f,
                "{} hugetlbfs file in {} ({})",
                if *shared { "shared" } else { "private" },
                dir.display(),
                format_size(*page_size)
            ),
        }
    }
}

fn check_conflicts(config: &MemoryConfig) -> Result<(), Error> {
    if config.hugepage_size.is_some() && !config.uses_hugetlb() {
        return Err(Error::Conflict(
            "hugepage_size needs hugepages=on (or mem_path)".into(),
        ));
    }
    if config.mergeable && config.shared {
        return Err(Error::Conflict(
            "mergeable=on needs shared=off: KSM merges only private anonymous pages".into(),
        ));
    }
    if config.mergeable && config.uses_hugetlb() {
        return Err(Error::Conflict(
            "mergeable=on needs hugepages=off and no mem_path: KSM merges only private \
             anonymous pages, never hugetlb pages"
                .into(),
        ));
    }
    if config.thp && config.uses_hugetlb() {
        return Err(Error::Conflict(
            "thp=on applies to 4 KiB-page memory; with hugepages=on or mem_path the pages \
             are hugetlb pages already"
                .into(),
        ));
    }
    Ok(())
}

fn supported_hugepage_size(asked: Option<u64>) -> Result<u64, Error> {
    let supported = host::hugepage_sizes();
    let list = || {
        if supported.is_empty() {
            "none: this kernel has no hugetlb support".to_string()
        } else {
            supported
                .iter()
                .map(|&s| format_size(s))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let size = match asked {
        Some(size) => size,
        None => host::default_hugepage_size().ok_or_else(|| Error::HugePageSize {
            size: "default".into(),
            supported: list(),
        })?,
    };
    if !size.is_power_of_two() || !supported.contains(&size) {
        return Err(Error::HugePageSize {
            size: format_size(size),
            supported: list(),
        });
    }
    Ok(size)
}

fn hugetlbfs_page_size(dir: &Path) -> Result<u64, Error> {
    let (fs_type, block_size) = host::statfs(dir).map_err(|source| Error::MemPath {
        path: dir.display().to_string(),
        source,
    })?;
    if fs_type != HUGETLBFS_MAGIC {
        return Err(Error::NotHugetlbfs {
            path: dir.display().to_string(),
            fs_type,
        });
    }
    Ok(block_size)
}

fn check_hugepage_alignment(layout: &MemoryLayout, page_size: u64) -> Result<(), Error> {
    for region in layout.regions() {
        if region.guest_addr % page_size != 0 || region.size % page_size != 0 {
            return Err(Error::NotHugePageAligned {
                guest_addr: region.guest_addr,
                size: region.size,
                page_size_kib: page_size >> 10,
            });
        }
    }
    Ok(())
}

fn check_pool(layout: &MemoryLayout, page_size: u64) -> Result<(), Error> {
    let needed = layout.total_size() / page_size;
    let pool = HugePagePool::read(page_size).unwrap_or(HugePagePool {
        page_size,
        total: 0,
        free: 0,
        reserved: 0,
    });
    if pool.available() >= needed {
        return Ok(());
    }
    let sysctl_hint = if host::default_hugepage_size() == Some(page_size) {
        format!(
            " (or `sysctl vm.nr_hugepages={}`)",
            pool.total + needed - pool.available()
        )
    } else {
        String::new()
    };
    Err(Error::NotEnoughHugePages {
        page_size_kib: page_size >> 10,
        needed,
        available: pool.available(),
        total: pool.total,
        wanted_total: pool.total + needed - pool.available(),
        sysfs: pool.sysfs_dir().display().to_string(),
        sysctl_hint,
    })
}

/// log2(page_size) in the bits where MAP_HUGE_* / MFD_HUGE_* expect it.
fn huge_size_bits(page_size: u64, shift: i32) -> i32 {
    (page_size.trailing_zeros() as i32) << shift
}

fn memfd(flags: u32) -> io::Result<File> {
    let name = c"kvmkit-guest-ram";
    // SAFETY: `name` is a NUL-terminated string; memfd_create returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Creates a file for `region` in the hugetlbfs directory `dir`, sized, and unlinked so
/// it disappears with the mapping.
fn hugetlbfs_file(dir: &Path, region: &RegionSpec) -> Result<File, Error> {
    let path = dir.join(format!(
        "kvmkit-guest-ram-{}-{:x}",
        std::process::id(),
        region.guest_addr
    ));
    let mem_path_error = |source| Error::MemPath {
        path: dir.display().to_string(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(mem_path_error)?;
    std::fs::remove_file(&path).map_err(mem_path_error)?;
    file.set_len(region.size).map_err(mem_path_error)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(mib: u64) -> MemoryLayout {
        MemoryLayout::x86_64(mib << 20).unwrap()
    }

    #[test]
    fn default_config_resolves_to_private_anonymous_memory() {
        let backing = Backing::resolve(&MemoryConfig::default(), &layout(8)).unwrap();

        assert_eq!(backing, Backing::Anonymous);
        assert_eq!(
            backing.mmap_flags(false),
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE
        );
    }

    #[test]
    fn shared_config_resolves_to_a_memfd() {
        let config: MemoryConfig = "shared=on,reserve=on".parse().unwrap();

        let backing = Backing::resolve(&config, &layout(8)).unwrap();

        assert_eq!(backing, Backing::SharedMemfd);
        assert_eq!(backing.mmap_flags(config.reserve), libc::MAP_SHARED);
    }

    #[test]
    fn hugetlb_flags_encode_the_page_size_and_never_skip_the_reservation() {
        let backing = Backing::AnonymousHugetlb { page_size: 1 << 30 };

        let flags = backing.mmap_flags(false);

        assert_eq!(flags & libc::MAP_NORESERVE, 0);
        assert_eq!(flags & libc::MAP_HUGE_1GB, libc::MAP_HUGE_1GB);
        assert_ne!(flags & libc::MAP_HUGETLB, 0);
    }

    #[test]
    fn mergeable_with_shared_memory_is_refused() {
        let config: MemoryConfig = "mergeable=on,shared=on".parse().unwrap();

        let error = Backing::resolve(&config, &layout(8)).unwrap_err();

        assert!(
            error.to_string().contains("KSM merges only private"),
            "{error}"
        );
    }

    #[test]
    fn mergeable_with_hugepages_is_refused() {
        let config: MemoryConfig = "mergeable=on,hugepages=on".parse().unwrap();

        let error = Backing::resolve(&config, &layout(8)).unwrap_err();

        assert!(
            matches!(error, Error::Conflict(ref m) if m.contains("hugetlb")),
            "{error}"
        );
    }

    #[test]
    fn thp_with_hugepages_is_refused() {
        let config: MemoryConfig = "thp=on,hugepages=on".parse().unwrap();

        assert!(matches!(
            Backing::resolve(&config, &layout(8)),
            Err(Error::Conflict(_))
        ));
    }

    #[test]
    fn hugepage_size_without_hugepages_is_refused() {
        let config: MemoryConfig = "hugepage_size=2M".parse().unwrap();

        let error = Backing::resolve(&config, &layout(8)).unwrap_err();

        assert!(error.to_string().contains("needs hugepages=on"), "{error}");
    }

    #[test]
    fn hugepage_size_that_is_not_a_power_of_two_is_refused_with_the_supported_sizes() {
        let config: MemoryConfig = "hugepages=on,hugepage_size=3M".parse().unwrap();

        let error = Backing::resolve(&config, &layout(12)).unwrap_err();

        assert!(matches!(&error, Error::HugePageSize { size, .. } if size == "3M"));
        assert!(error.to_string().contains("2M"), "{error}");
    }

    #[test]
    fn power_of_two_the_host_has_no_pool_for_is_refused() {
        let config: MemoryConfig = "hugepages=on,hugepage_size=4M".parse().unwrap();

        let error = Backing::resolve(&config, &layout(8)).unwrap_err();

        assert!(matches!(error, Error::HugePageSize { .. }), "{error}");
    }

    #[test]
    fn region_that_is_not_whole_hugepages_is_refused() {
        let config: MemoryConfig = "hugepages=on,hugepage_size=2M".parse().unwrap();
        let odd = MemoryLayout::x86_64(3 << 20).unwrap();

        let error = Backing::resolve(&config, &odd).unwrap_err();

        assert!(
            matches!(
                error,
                Error::NotHugePageAligned {
                    page_size_kib: 2048,
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn mem_path_that_is_not_hugetlbfs_is_refused_with_the_mount_command() {
        let config: MemoryConfig = "mem_path=/tmp".parse().unwrap();

        let error = Backing::resolve(&config, &layout(8)).unwrap_err();

        assert!(matches!(error, Error::NotHugetlbfs { .. }), "{error}");
        assert!(error.to_string().contains("mount -t hugetlbfs"), "{error}");
    }

    #[test]
    fn mem_path_that_does_not_exist_is_refused() {
        let config: MemoryConfig = "mem_path=/nonexistent/hugepages".parse().unwrap();

        let error = Backing::resolve(&config, &layout(8)).unwrap_err();

        assert!(matches!(error, Error::MemPath { .. }), "{error}");
    }

    #[test]
    fn pool_too_small_says_how_many_pages_and_where_to_raise_it() {
        // 1 TiB of 2 MiB pages is more than any test host reserves.
        let config: MemoryConfig = "hugepages=on,hugepage_size=2M".parse().unwrap();
        let huge = MemoryLayout::x86_64(1 << 40).unwrap();

        let error = Backing::resolve(&config, &huge).unwrap_err();

        assert!(
            matches!(
                error,
                Error::NotEnoughHugePages {
                    needed: 524_288,
                    ..
                }
            ),
            "{error}"
        );
        let message = error.to_string();
        assert!(
            message.contains("hugepages-2048kB/nr_hugepages"),
            "{message}"
        );
    }
}
