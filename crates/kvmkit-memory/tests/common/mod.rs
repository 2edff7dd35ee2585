// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What the memory tests share: guest RAM of a size and options, as a VMM makes it.

use kvmkit_memory::{GuestRam, MemoryConfig, MemoryLayout};

pub const MIB: u64 = 1 << 20;

/// `mib` MiB of guest RAM in the x86 layout, backed as `options` (`--memory`'s keys)
/// say.
pub fn ram(mib: u64, options: &str) -> GuestRam {
    let layout = MemoryLayout::x86_64(mib * MIB).unwrap();
    let config: MemoryConfig = options.parse().unwrap();
    GuestRam::new(&layout, &config).unwrap_or_else(|e| panic!("{options}: {e}"))
}
