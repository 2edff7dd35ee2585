// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Every backing, checked through what the kernel reports in /proc/self/smaps.
//!
//! These need a 2 MiB hugepage pool of at least 64 pages and a hugetlbfs mount, which
//! `.ci/run` sets up; on a machine without them the tests fail and say how to add them.

mod common;

use common::{ram, MIB};
use kvmkit_memory::{
    Backing, Error, GuestRam, HugePagePool, MemoryConfig, MemoryLayout, RegionReport,
};
use vm_memory::{Bytes, GuestAddress};

const GIB: u64 = 1 << 30;

fn only_region(ram: &GuestRam) -> RegionReport {
    let report = ram.report().unwrap();
    assert_eq!(report.regions.len(), 1);
    report.regions[0].clone()
}

fn require_2m_pool(pages: u64) {
    let pool = HugePagePool::read(2 * MIB).expect("this kernel has no 2 MiB hugepage pool");
    assert!(
        pool.available() >= pages,
        "these tests need {pages} free 2 MiB hugepages, the pool has {}: run as root \
         `echo 128 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages`",
        pool.available()
    );
}

fn hugetlbfs_mount() -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, path, fs) = (fields.next()?, fields.next()?, fields.next()?);
            let options = fields.next().unwrap_or("");
            let two_mib = !options.contains("pagesize=") || options.contains("pagesize=2M");
            (fs == "hugetlbfs" && two_mib).then(|| path.to_string())
        })
        .next()
        .expect(
            "these tests need a 2 MiB hugetlbfs mount: run as root \
             `mkdir -p /dev/hugepages && mount -t hugetlbfs -o pagesize=2M none /dev/hugepages`",
        )
}

#[test]
fn anonymous_memory_is_4k_pages_and_lazy_until_prefaulted() {
    let lazy = ram(16, "");
    let prefaulted = ram(16, "prefault=on");

    let lazy_report = only_region(&lazy);
    let prefaulted_report = only_region(&prefaulted);

    assert_eq!(lazy.backing(), &Backing::Anonymous);
    assert_eq!(lazy_report.kernel_page_size, 4096);
    assert_eq!(lazy_report.resident, 0);
    assert!(!lazy_report.flags.shared && !lazy_report.flags.hugetlb);
    assert_eq!(prefaulted_report.resident, 16 * MIB);
}

#[test]
fn shared_memory_is_a_shared_memfd_mapping() {
    let shared = ram(8, "shared=on,prefault=on");

    let report = only_region(&shared);

    assert_eq!(shared.backing(), &Backing::SharedMemfd);
    assert!(report.flags.shared, "{report}");
    assert_eq!(report.kernel_page_size, 4096);
    assert_eq!(report.resident, 8 * MIB);
}

#[test]
fn anonymous_2m_hugetlb_memory_has_2m_kernel_pages() {
    require_2m_pool(8);
    let huge = ram(16, "hugepages=on,hugepage_size=2M,prefault=on");

    let report = only_region(&huge);

    assert_eq!(
        huge.backing(),
        &Backing::AnonymousHugetlb { page_size: 2 * MIB }
    );
    assert_eq!(report.kernel_page_size, 2 * MIB, "{report}");
    assert!(report.flags.hugetlb && !report.flags.shared, "{report}");
    assert_eq!(report.hugetlb, 16 * MIB, "{report}");
}

#[test]
fn shared_2m_hugetlb_memory_is_a_shared_hugetlb_memfd() {
    require_2m_pool(8);
    let huge = ram(16, "hugepages=on,hugepage_size=2M,shared=on,prefault=on");

    let report = only_region(&huge);

    assert_eq!(
        huge.backing(),
        &Backing::SharedHugetlbMemfd { page_size: 2 * MIB }
    );
    assert_eq!(report.kernel_page_size, 2 * MIB, "{report}");
    assert!(report.flags.hugetlb && report.flags.shared, "{report}");
    assert_eq!(report.hugetlb, 16 * MIB, "{report}");
}

#[test]
fn hugetlbfs_file_backing_has_the_mounts_page_size_and_leaves_no_file() {
    require_2m_pool(8);
    let mount = hugetlbfs_mount();
    let before: Vec<_> = std::fs::read_dir(&mount).unwrap().flatten().collect();

    let huge = ram(16, &format!("mem_path={mount},shared=on,prefault=on"));
    let report = only_region(&huge);
    let after: Vec<_> = std::fs::read_dir(&mount).unwrap().flatten().collect();

    assert!(
        matches!(huge.backing(), Backing::HugetlbfsFile { page_size, .. } if *page_size == 2 * MIB)
    );
    assert_eq!(report.kernel_page_size, 2 * MIB, "{report}");
    assert_eq!(report.hugetlb, 16 * MIB, "{report}");
    assert_eq!(
        before.len(),
        after.len(),
        "the backing file was left in {mount}"
    );
}

#[test]
fn hugetlb_memory_is_usable_guest_memory() {
    require_2m_pool(8);
    let huge = ram(16, "hugepages=on,hugepage_size=2M");

    huge.memory()
        .write_obj(0x1234_5678u32, GuestAddress(15 * MIB))
        .unwrap();

    assert_eq!(
        huge.memory()
            .read_obj::<u32>(GuestAddress(15 * MIB))
            .unwrap(),
        0x1234_5678
    );
    assert_eq!(only_region(&huge).hugetlb, 2 * MIB);
}

#[test]
fn one_gigabyte_hugetlb_memory_has_1g_kernel_pages_or_a_clear_pool_error() {
    let config: MemoryConfig = "hugepages=on,hugepage_size=1G,prefault=on".parse().unwrap();
    let layout = MemoryLayout::x86_64(GIB).unwrap();

    match GuestRam::new(&layout, &config) {
        Ok(huge) => {
            let report = only_region(&huge);
            assert_eq!(report.kernel_page_size, GIB, "{report}");
            assert_eq!(report.hugetlb, GIB, "{report}");
        }
        Err(error @ Error::NotEnoughHugePages { .. }) => {
            // The host could not set aside a 1 GiB page: the pool check caught it
            // before anything was mapped, and says how to raise the pool.
            eprintln!("1 GiB hugepages unavailable on this host: {error}");
            assert!(error.to_string().contains("hugepages-1048576kB"), "{error}");
        }
        Err(other) => panic!("1 GiB hugetlb memory failed: {other}"),
    }
}

#[test]
fn thp_memory_is_advised_and_backed_by_transparent_hugepages() {
    let thp = ram(32, "thp=on,prefault=on");

    let report = only_region(&thp);

    assert!(report.flags.hugepage, "{report}");
    // The kernel may leave an unaligned head or tail in 4 KiB pages, never most of it.
    assert!(
        report.anon_huge_pages >= 16 * MIB,
        "THP gave only {} KiB of 32 MiB in hugepages: {report}",
        report.anon_huge_pages >> 10
    );
}

#[test]
fn mergeable_memory_is_advised_to_ksm() {
    let mergeable = ram(8, "mergeable=on");

    let report = mergeable.report().unwrap();

    assert!(report.regions[0].flags.mergeable, "{}", report.regions[0]);
    assert!(report.ksm.is_some(), "this kernel has no KSM");
}

#[test]
fn reserve_off_maps_with_map_noreserve_and_reserve_on_without() {
    let sparse = ram(64 * 1024, "");
    let reserved = ram(16, "reserve=on");

    let sparse_report = sparse.report().unwrap();
    assert_eq!(sparse.size(), 64 * GIB);
    assert_eq!(sparse_report.resident(), 0);
    for region in &sparse_report.regions {
        assert!(region.flags.no_reserve, "{region}");
    }
    let reserved_region = only_region(&reserved);
    assert!(!reserved_region.flags.no_reserve, "{reserved_region}");
}

fn first_memfd(ram: &GuestRam) -> &std::fs::File {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    let region = ram.memory().iter().next().unwrap();
    region
        .file_offset()
        .expect("a shared backing is a file")
        .file()
}

fn truncate(file: &std::fs::File, len: u64) -> std::io::Result<()> {
    file.set_len(len)
}

#[test]
fn shared_memfd_cannot_be_shrunk_or_grown_by_whoever_holds_its_fd() {
    let shared = ram(16, "shared=on");
    let file = first_memfd(&shared);

    let shrink = truncate(file, 4096).unwrap_err();
    let grow = truncate(file, 32 * MIB).unwrap_err();

    assert_eq!(shrink.raw_os_error(), Some(libc::EPERM), "{shrink}");
    assert_eq!(grow.raw_os_error(), Some(libc::EPERM), "{grow}");
    shared
        .memory()
        .write_obj(1u64, GuestAddress(16 * MIB - 8))
        .unwrap();
}

#[test]
fn shared_hugetlb_memfd_is_sealed_too() {
    require_2m_pool(8);
    let shared = ram(16, "shared=on,hugepages=on,hugepage_size=2M");

    let error = truncate(first_memfd(&shared), 2 * MIB).unwrap_err();

    assert_eq!(error.raw_os_error(), Some(libc::EPERM), "{error}");
}

#[test]
fn mem_path_on_another_file_system_suggests_an_existing_hugetlbfs_mount() {
    let mount = hugetlbfs_mount();
    let config: MemoryConfig = "mem_path=/tmp".parse().unwrap();

    let error = GuestRam::new(&MemoryLayout::x86_64(8 * MIB).unwrap(), &config).unwrap_err();

    let message = error.to_string();
    assert!(matches!(error, Error::NotHugetlbfs { .. }), "{message}");
    assert!(message.contains(&mount), "{message}");
    assert!(
        !message.contains("none /tmp"),
        "never mount over /tmp: {message}"
    );
}

#[test]
fn mem_path_that_is_a_device_is_refused_as_not_a_directory() {
    let config: MemoryConfig = "mem_path=/dev/null".parse().unwrap();

    let error = GuestRam::new(&MemoryLayout::x86_64(8 * MIB).unwrap(), &config).unwrap_err();

    let message = error.to_string();
    assert!(
        matches!(error, Error::MemPathNotDirectory { .. }),
        "{message}"
    );
    assert!(!message.contains("mount -t hugetlbfs"), "{message}");
}

/// A hugetlbfs mount of its own with a `size=` limit, unmounted on drop.
struct LimitedMount(std::path::PathBuf);

impl LimitedMount {
    fn new(limit: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("kvmkit-limited-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "hugetlbfs", "-o"])
            .arg(format!("pagesize=2M,size={limit}"))
            .arg("none")
            .arg(&dir)
            .status()
            .expect("mount(8) runs");
        assert!(
            status.success(),
            "this test mounts hugetlbfs: run it as root"
        );
        LimitedMount(dir)
    }
}

impl Drop for LimitedMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn hugetlbfs_mount_with_a_size_limit_too_small_is_refused_before_mapping() {
    require_2m_pool(8);
    let mount = LimitedMount::new("4M");
    let config: MemoryConfig = format!("mem_path={}", mount.0.display()).parse().unwrap();

    let error = GuestRam::new(&MemoryLayout::x86_64(8 * MIB).unwrap(), &config).unwrap_err();
    let fits = GuestRam::new(&MemoryLayout::x86_64(4 * MIB).unwrap(), &config);

    assert!(
        matches!(
            error,
            Error::MountFull {
                free: 2,
                limit: 2,
                needed: 4,
                ..
            }
        ),
        "{error}"
    );
    assert!(fits.is_ok(), "{:?}", fits.err());
}

#[test]
fn pool_shortage_is_refused_before_anything_is_mapped() {
    let config: MemoryConfig = "hugepages=on,hugepage_size=2M".parse().unwrap();
    let pool = HugePagePool::read(2 * MIB).unwrap();
    let too_many = (pool.available() + 1) * 2 * MIB;
    let layout = MemoryLayout::x86_64(too_many).unwrap();

    let error = GuestRam::new(&layout, &config).unwrap_err();

    match error {
        // Tests running alongside may hold pool pages too: the pool can only have shrunk.
        Error::NotEnoughHugePages {
            needed, available, ..
        } => {
            assert_eq!(needed, pool.available() + 1);
            assert!(available <= pool.available());
        }
        other => panic!("expected a pool shortage, got {other}"),
    }
}
