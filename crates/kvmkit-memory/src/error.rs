// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

use std::io;

/// What can go wrong while laying out or mapping guest memory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A layout must have at least one region.
    #[error("the memory layout has no regions")]
    EmptyLayout,
    /// A region has no bytes.
    #[error("memory region at {guest_addr:#x} has size 0")]
    EmptyRegion {
        /// Guest-physical start of the region.
        guest_addr: u64,
    },
    /// A region's start or size is not a multiple of the host page size.
    #[error(
        "memory region at {guest_addr:#x} of size {size:#x} is not aligned to the {page_size:#x}-byte page size"
    )]
    Unaligned {
        /// Guest-physical start of the region.
        guest_addr: u64,
        /// Size of the region in bytes.
        size: u64,
        /// The page size it must be a multiple of.
        page_size: u64,
    },
    /// Two regions cover the same guest-physical addresses, or are not in order.
    #[error("memory region at {second:#x} overlaps or precedes the region at {first:#x}")]
    Overlap {
        /// Start of the earlier region.
        first: u64,
        /// Start of the region that overlaps it.
        second: u64,
    },
    /// More guest RAM than a process can map (see
    /// [`MAX_GUEST_MEMORY`](crate::MAX_GUEST_MEMORY)): refused before anything is mapped.
    #[error("{size:#x} bytes of guest memory is more than kvmkit maps (at most {max:#x})")]
    TooLarge {
        /// The size asked for.
        size: u64,
        /// The most there may be.
        max: u64,
    },
    /// Faulting every page in (`prefault=on`) needs more memory than the host has free.
    #[error("prefault=on needs {size:#x} bytes of memory now, but the host has {available:#x} available (MemAvailable in /proc/meminfo): give the VM less memory, or leave prefault off")]
    PrefaultTooLarge {
        /// Bytes of guest memory to fault in.
        size: u64,
        /// What the host can give without swapping (`MemAvailable`).
        available: u64,
    },
    /// A region runs past the end of the 64-bit guest-physical address space.
    #[error("memory region at {guest_addr:#x} of size {size:#x} wraps the address space")]
    AddressOverflow {
        /// Guest-physical start of the region.
        guest_addr: u64,
        /// Size of the region in bytes.
        size: u64,
    },
    /// The host refused to map a region.
    #[error("cannot map {size:#x} bytes of {backing} memory for guest address {guest_addr:#x}")]
    Map {
        /// Guest-physical start of the region.
        guest_addr: u64,
        /// Size of the region in bytes.
        size: u64,
        /// The backing that was asked for.
        backing: String,
        /// The error from mmap.
        #[source]
        source: io::Error,
    },
    /// A memory option has a value that cannot be used.
    #[error("memory option {key}={value} is invalid: expected {expected}")]
    Option {
        /// The option's key.
        key: String,
        /// The value given.
        value: String,
        /// What the value must look like.
        expected: String,
    },
    /// A memory option that does not exist.
    #[error(
        "unknown memory option '{key}': the options are size, shared, hugepages, \
         hugepage_size, mem_path, thp, mergeable, prefault and reserve"
    )]
    UnknownOption {
        /// The key given.
        key: String,
    },
    /// Two options that cannot go together, or one that needs another.
    #[error(transparent)]
    Conflict(#[from] Conflict),
    /// The hugepage size is not one this host supports.
    #[error(
        "hugepage_size={size} is not supported: it must be a power of two that this host \
         has a hugepage pool for ({supported})"
    )]
    HugePageSize {
        /// The size asked for, as written.
        size: String,
        /// The sizes the host supports, as written.
        supported: String,
    },
    /// A region does not fill whole hugepages.
    #[error(
        "memory region at {guest_addr:#x} of size {size:#x} is not a whole number of \
         {page_size_kib} KiB hugepages: make the memory size a multiple of the hugepage size"
    )]
    NotHugePageAligned {
        /// Guest-physical start of the region.
        guest_addr: u64,
        /// Size of the region.
        size: u64,
        /// The hugepage size in KiB.
        page_size_kib: u64,
    },
    /// `mem_path` is not on hugetlbfs.
    #[error("mem_path {path} is not on a hugetlbfs mount (file system type {fs_type:#x}): {fix}")]
    NotHugetlbfs {
        /// The path given.
        path: String,
        /// The file system type found.
        fs_type: i64,
        /// What to do instead: the hugetlbfs mounts there are, or how to make one on a
        /// fresh directory.
        fix: String,
    },
    /// `mem_path` is not a directory.
    #[error("mem_path {path} is not a directory: give a directory on a hugetlbfs mount, such as {example}")]
    MemPathNotDirectory {
        /// The path given.
        path: String,
        /// A hugetlbfs directory to use instead.
        example: String,
    },
    /// The hugetlbfs mount's `size=` limit leaves too little room for the guest.
    #[error(
        "the hugetlbfs mount holding {path} has room for {free} more {page_size_kib} KiB pages \
         (its size= limit is {limit} pages); the guest needs {needed}"
    )]
    MountFull {
        /// The directory given.
        path: String,
        /// The page size of the mount in KiB.
        page_size_kib: u64,
        /// Pages the mount's limit still allows.
        free: u64,
        /// The mount's limit in pages.
        limit: u64,
        /// Pages the guest needs.
        needed: u64,
    },
    /// `mem_path` cannot be used.
    #[error("mem_path {path}")]
    MemPath {
        /// The path given.
        path: String,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The hugepage pool has too few free pages for the guest.
    #[error(
        "not enough free {page_size_kib} KiB hugepages: the guest needs {needed}, the pool has \
         {available} available of {total}. Raise the pool as root with `echo {wanted_total} > \
         {sysfs}/nr_hugepages`{sysctl_hint}"
    )]
    NotEnoughHugePages {
        /// The hugepage size in KiB.
        page_size_kib: u64,
        /// Pages the guest needs.
        needed: u64,
        /// Pages the pool can still reserve.
        available: u64,
        /// Pages in the pool.
        total: u64,
        /// The pool size that would fit the guest.
        wanted_total: u64,
        /// The pool's sysfs directory.
        sysfs: String,
        /// `" (or sysctl vm.nr_hugepages=N)"` for the default size, else empty.
        sysctl_hint: String,
    },
    /// A memfd could not be created or sized.
    #[error("cannot create the memfd for guest memory at {guest_addr:#x}")]
    Memfd {
        /// Guest-physical start of the region.
        guest_addr: u64,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// madvise refused an advice.
    #[error("madvise({advice}) on guest memory at {guest_addr:#x} failed")]
    Advise {
        /// The advice, e.g. `MADV_MERGEABLE`.
        advice: &'static str,
        /// Guest-physical start of the region.
        guest_addr: u64,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Guest RAM cannot start as a private copy of an image with this backing: only
    /// private anonymous memory can (hugepages and shared memory are filled by copying).
    #[error("guest RAM of {backing} memory cannot be mapped from an image: only private anonymous memory can")]
    ImageBacking {
        /// The backing asked for.
        backing: String,
    },
    /// The image is shorter than guest RAM: pages past its end would fault with SIGBUS.
    #[error("the image holds {length:#x} bytes, guest RAM needs {needed:#x}")]
    ImageTooShort {
        /// The image's length.
        length: u64,
        /// Guest RAM's size.
        needed: u64,
    },
    /// The image could not be looked at (its length) or opened again.
    #[error("cannot read the image's length or open it again")]
    ImageLength(#[source] io::Error),
    /// `/proc/self/smaps` or `mincore` could not tell what the kernel did.
    #[error("cannot report on guest memory: {what}")]
    Report {
        /// What could not be read.
        what: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// KSM's controls could not be read or written.
    #[error("KSM: {path}: {fix}")]
    Ksm {
        /// The sysfs file.
        path: String,
        /// What to do about it.
        fix: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// vm-memory refused the set of regions.
    #[error("vm-memory refused the guest memory regions")]
    Collection(#[from] vm_memory::GuestRegionCollectionError),
}

/// Memory options that cannot go together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Conflict {
    /// `hugepage_size` without hugetlb memory.
    #[error("hugepage_size needs hugepages=on (or mem_path)")]
    HugepageSizeWithoutHugepages,
    /// KSM with shared memory.
    #[error("mergeable=on needs shared=off: KSM merges only private anonymous pages")]
    MergeableShared,
    /// KSM with hugetlb memory.
    #[error(
        "mergeable=on needs hugepages=off and no mem_path: KSM merges only private anonymous \
         pages, never hugetlb pages"
    )]
    MergeableHugetlb,
    /// THP with hugetlb memory.
    #[error(
        "thp=on applies to 4 KiB-page memory; with hugepages=on or mem_path the pages are \
         hugetlb pages already"
    )]
    ThpHugetlb,
    /// `hugepage_size` differs from the page size of the `mem_path` mount.
    #[error("hugepage_size={asked} but the hugetlbfs mount at {dir} has {mount} pages")]
    MountPageSize {
        /// The size asked for.
        asked: String,
        /// The mount's page size.
        mount: String,
        /// The directory.
        dir: String,
    },
}
