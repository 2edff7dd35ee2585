// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Where guest RAM lands in the host's address space, in a test binary of its own: the
//! other tests of a binary map and unmap memory on their threads meanwhile, which can
//! take the hole a mapping was placed for (the library then tries again, a few times).

mod common;

use common::ram;
use kvmkit_memory::{GuestRam, HOST_ALIGNMENT};

#[test]
fn guest_ram_starts_where_kvm_can_map_it_with_2m_pages() {
    // Arrange: a process whose address space has seen other mappings come and go.
    let others: Vec<GuestRam> = (0..4).map(|_| ram(6, "")).collect();

    // Act: RAM of each backing that is not hugetlbfs, sizes that are and are not
    // whole 2 MiB pages (newer kernels align only the former by themselves), and a
    // region above 4 GiB.
    let rams = [
        ram(64, ""),
        ram(7, ""),
        ram(63, "shared=on"),
        ram(65, "thp=on"),
        ram(3 * 1024 + 512 + 7, ""),
    ];

    // Assert: host and guest addresses agree modulo 2 MiB (every region starts
    // 2 MiB-aligned in the guest), as a transparent hugepage needs to back a guest
    // 2 MiB page.
    for ram in rams.iter().chain(&others) {
        for region in ram.regions() {
            assert_eq!(
                region.host_addr % HOST_ALIGNMENT,
                0,
                "{:?} at {:#x} for guest {:#x}",
                ram.backing(),
                region.host_addr,
                region.spec.guest_addr
            );
        }
    }
}
