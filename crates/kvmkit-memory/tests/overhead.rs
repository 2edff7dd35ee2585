// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The VMM's own memory, in a test binary of its own: it reads the whole process's
//! RSS, which the other tests of a binary would grow on their threads meanwhile.

mod common;

use common::{ram, MIB};

#[test]
fn the_vmm_overhead_leaves_out_the_guest_ram_counted_in_the_process_rss() {
    // Arrange: 64 MiB of guest RAM, all touched, and 16 MiB of the VMM's own.
    let guest = ram(64, "prefault=on");
    let own = vec![1u8; 16 << 20];
    let before = guest.report().unwrap();

    // Act: the VMM touches 16 MiB more of its own.
    let more = vec![2u8; 16 << 20];
    let after = guest.report().unwrap();

    // Assert
    assert_eq!(after.regions[0].rss, 64 * MIB, "{}", after.regions[0]);
    assert!(after.process_rss >= 64 * MIB + 32 * MIB, "{after}");
    let grown = after.vmm_overhead() - before.vmm_overhead();
    assert!(
        (15 * MIB..=17 * MIB).contains(&grown),
        "the overhead grew by {} KiB, the VMM's own 16 MiB",
        grown >> 10
    );
    drop((own, more));
}
