// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! How guest RAM is backed in the VMM process.

use std::fmt;

/// The kind of host memory behind guest RAM.
///
/// The enum is non-exhaustive: shared memfd, hugetlbfs files and explicit hugepage
/// sizes are added as variants without breaking code that builds a [`MemoryConfig`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backing {
    /// Private anonymous memory (`MAP_PRIVATE | MAP_ANONYMOUS`), allocated lazily by
    /// the host on first touch. Nothing else can map it.
    #[default]
    Anonymous,
}

impl fmt::Display for Backing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backing::Anonymous => f.write_str("anonymous private"),
        }
    }
}

impl Backing {
    /// The mmap flags that create this backing.
    pub(crate) fn mmap_flags(&self) -> i32 {
        match self {
            Backing::Anonymous => libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        }
    }
}

/// Everything about how guest RAM is backed, independent of where it lies.
///
/// ```
/// use kvmkit_memory::{Backing, MemoryConfig};
///
/// let config = MemoryConfig::default().with_backing(Backing::Anonymous);
/// assert_eq!(config.backing(), &Backing::Anonymous);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryConfig {
    backing: Backing,
}

impl MemoryConfig {
    /// This configuration with another backing.
    pub fn with_backing(mut self, backing: Backing) -> Self {
        self.backing = backing;
        self
    }

    /// The backing every region gets.
    pub fn backing(&self) -> &Backing {
        &self.backing
    }
}
