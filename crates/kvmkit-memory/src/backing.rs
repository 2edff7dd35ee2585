// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The kind of host memory behind guest RAM, resolved and checked from a
//! [`MemoryConfig`] before anything is mapped.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};

use crate::config::format_size;
use crate::error::Conflict;
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
            let mount = hugetlbfs_mount(dir)?;
            let page_size = mount.block_size;
            if let Some(asked) = config.hugepage_size {
                if asked != page_size {
                    return Err(Conflict::MountPageSize {
                        asked: format_size(asked),
                        mount: format_size(page_size),
                        dir: dir.display().to_string(),
                    }
                    .into());
                }
            }
            check_mount_room(dir, &mount, layout.total_size() / page_size)?;
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
        } else if config.prefault {
            check_available(layout)?;
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
            Backing::SharedMemfd => libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            Backing::SharedHugetlbMemfd { page_size } => {
                libc::MFD_CLOEXEC
                    | libc::MFD_ALLOW_SEALING
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
        seal_size(&file).map_err(|source| Error::Memfd {
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

fn check_conflicts(config: &MemoryConfig) -> Result<(), Conflict> {
    if config.hugepage_size.is_some() && !config.uses_hugetlb() {
        return Err(Conflict::HugepageSizeWithoutHugepages);
    }
    if config.mergeable && config.shared {
        return Err(Conflict::MergeableShared);
    }
    if config.mergeable && config.uses_hugetlb() {
        return Err(Conflict::MergeableHugetlb);
    }
    if config.thp && config.uses_hugetlb() {
        return Err(Conflict::ThpHugetlb);
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

/// Checks that `dir` is a directory on hugetlbfs and returns what statfs says of the
/// mount.
fn hugetlbfs_mount(dir: &Path) -> Result<host::FsStats, Error> {
    let path = format!("{dir:?}");
    let metadata = std::fs::metadata(dir).map_err(|source| Error::MemPath {
        path: path.clone(),
        source,
    })?;
    if !metadata.is_dir() {
        return Err(Error::MemPathNotDirectory {
            path,
            example: host::hugetlbfs_mounts()
                .first()
                .map_or_else(|| FRESH_MOUNT_DIR.to_string(), |m| m.display().to_string()),
        });
    }
    let stats = host::statfs(dir).map_err(|source| Error::MemPath {
        path: path.clone(),
        source,
    })?;
    if stats.fs_type != HUGETLBFS_MAGIC {
        return Err(Error::NotHugetlbfs {
            path,
            fs_type: stats.fs_type,
            fix: hugetlbfs_fix(),
        });
    }
    Ok(stats)
}

/// Where the error messages suggest mounting hugetlbfs: a directory of its own, never
/// one the system uses for something else.
const FRESH_MOUNT_DIR: &str = "/mnt/kvmkit-hugepages";

/// What to do when `mem_path` is not on hugetlbfs: use a mount there is, or make one.
fn hugetlbfs_fix() -> String {
    hugetlbfs_fix_for(&host::hugetlbfs_mounts())
}

fn hugetlbfs_fix_for(mounts: &[PathBuf]) -> String {
    if mounts.is_empty() {
        format!(
            "this host has no hugetlbfs mount; make one on a fresh directory with `mkdir -p \
             {FRESH_MOUNT_DIR} && mount -t hugetlbfs -o pagesize=2M none {FRESH_MOUNT_DIR}` \
             and use mem_path={FRESH_MOUNT_DIR}"
        )
    } else {
        let list: Vec<String> = mounts.iter().map(|m| m.display().to_string()).collect();
        format!("use a hugetlbfs mount instead: {}", list.join(", "))
    }
}

/// A hugetlbfs mount with a `size=` limit reports it as its block count; without one
/// the count is 0.
fn check_mount_room(dir: &Path, mount: &host::FsStats, needed: u64) -> Result<(), Error> {
    if mount.blocks == 0 || mount.blocks_free >= needed {
        return Ok(());
    }
    Err(Error::MountFull {
        path: format!("{dir:?}"),
        page_size_kib: mount.block_size >> 10,
        free: mount.blocks_free,
        limit: mount.blocks,
        needed,
    })
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

/// Prefaulting 4 KiB-page memory takes all of it at once: refused, as QEMU's
/// preallocation is, when the host has not that much available, instead of growing
/// until the OOM killer ends the VMM (or a neighbour).
fn check_available(layout: &MemoryLayout) -> Result<(), Error> {
    let Some(available) = host::mem_available() else {
        return Ok(());
    };
    let size = layout.total_size();
    if size > available {
        return Err(Error::PrefaultTooLarge { size, available });
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
        surplus: 0,
        overcommit: 0,
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

pub(crate) fn memfd(flags: u32) -> io::Result<File> {
    let name = c"kvmkit-guest-ram";
    // SAFETY: `name` is a NUL-terminated string; memfd_create returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Seals the memfd's size: another process that maps guest memory (a vhost-user
/// backend) cannot shrink it under the VMM, which would turn guest and device accesses
/// into SIGBUS, nor grow it; and no further seals can be changed.
fn seal_size(file: &File) -> io::Result<()> {
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: F_ADD_SEALS on a descriptor this function borrows; it changes no memory.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
        path: format!("{dir:?}"),
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
            matches!(error, Error::Conflict(Conflict::MergeableHugetlb)),
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
    fn mem_path_that_is_not_hugetlbfs_is_refused() {
        let config: MemoryConfig = "mem_path=/tmp".parse().unwrap();

        let error = Backing::resolve(&config, &layout(8)).unwrap_err();

        assert!(matches!(error, Error::NotHugetlbfs { .. }), "{error}");
    }

    #[test]
    fn without_a_hugetlbfs_mount_the_fix_mounts_one_on_a_fresh_directory() {
        let fix = hugetlbfs_fix_for(&[]);

        assert!(
            fix.contains(&format!("mkdir -p {FRESH_MOUNT_DIR}")),
            "{fix}"
        );
        assert!(
            fix.contains(&format!(
                "mount -t hugetlbfs -o pagesize=2M none {FRESH_MOUNT_DIR}"
            )),
            "{fix}"
        );
    }

    #[test]
    fn with_hugetlbfs_mounts_the_fix_names_them() {
        let mounts = [
            PathBuf::from("/dev/hugepages"),
            PathBuf::from("/mnt/huge1g"),
        ];

        let fix = hugetlbfs_fix_for(&mounts);

        assert!(fix.contains("/dev/hugepages, /mnt/huge1g"), "{fix}");
        assert!(!fix.contains("mount -t"), "{fix}");
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

    #[test]
    fn prefaulting_more_than_the_host_has_available_is_refused_before_mapping() {
        let available = crate::host::mem_available().expect("/proc/meminfo has MemAvailable");
        let size = (available + (1 << 30)).next_multiple_of(1 << 30);
        let layout = MemoryLayout::from_regions(vec![RegionSpec::new(0, size)]).unwrap();
        let config: MemoryConfig = "prefault=on".parse().unwrap();

        let prefaulted = Backing::resolve(&config, &layout);
        let lazy = Backing::resolve(&MemoryConfig::default(), &layout);

        assert!(
            matches!(prefaulted, Err(Error::PrefaultTooLarge { size: s, .. }) if s == size),
            "{prefaulted:?}"
        );
        assert!(lazy.is_ok(), "memory faulted in lazily may overcommit");
    }
}
