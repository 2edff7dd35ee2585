// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! KSM merges identical pages of mergeable guest memory, seen in its counters.
//!
//! Needs KSM scanning (`/sys/kernel/mm/ksm/run` = 1), which the test turns on itself
//! when it runs as root and restores afterwards; `.ci/run` runs it as root.

// Test code: the values cast are small constants and sizes this file chose (queue
// slots, sector numbers, test buffer lengths), which its own assertions would catch
// truncating.
#![allow(clippy::cast_possible_truncation)]

use std::time::{Duration, Instant};

use kvmkit_memory::{GuestRam, KsmCounters, KsmScanning, MemoryConfig, MemoryLayout};
use vm_memory::{Bytes, GuestAddress};

#[test]
fn identical_pages_of_two_mergeable_guests_are_merged_by_ksm() {
    let layout = MemoryLayout::x86_64(16 << 20).unwrap();
    let config: MemoryConfig = "mergeable=on".parse().unwrap();
    let guests = [
        GuestRam::new(&layout, &config).unwrap(),
        GuestRam::new(&layout, &config).unwrap(),
    ];
    let page: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    for guest in &guests {
        for offset in (0..16u64 << 20).step_by(4096) {
            guest
                .memory()
                .write_slice(&page, GuestAddress(offset))
                .unwrap();
        }
    }
    let total_pages = 2 * (16 << 20) / 4096;
    let ksm = KsmScanning::start().unwrap_or_else(|e| panic!("this test needs KSM scanning: {e}"));

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut counters = KsmCounters::read().unwrap();
    while counters.process_merging_pages.unwrap_or(0) < total_pages * 9 / 10
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
        counters = KsmCounters::read().unwrap();
    }
    drop(ksm);

    let merged = counters
        .process_merging_pages
        .expect("no /proc/self/ksm_stat");
    assert!(
        merged >= total_pages * 9 / 10,
        "KSM merged {merged} of {total_pages} identical pages: {counters:?}"
    );
    // Each KSM page stands for up to max_page_sharing guest pages: the merged pages
    // are the KSM pages plus the pages pointing at them.
    assert!(
        counters.pages_shared + counters.pages_sharing >= merged,
        "{counters:?}"
    );
    assert!(counters.pages_sharing >= merged / 2, "{counters:?}");
    let report = guests[0].report().unwrap();
    assert!(report.regions[0].flags.mergeable, "{report}");
}
