// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The options a user writes for guest memory, and their parser.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::Error;

/// How guest RAM is backed, as a user asks for it.
///
/// Written the way Cloud Hypervisor users write `--memory`:
///
/// ```
/// use kvmkit_memory::MemoryConfig;
///
/// let config: MemoryConfig =
///     "size=512M,hugepages=on,hugepage_size=2M,shared=off,prefault=on".parse().unwrap();
/// assert_eq!(config.size, Some(512 << 20));
/// assert!(config.hugepages && config.prefault && !config.shared);
/// assert_eq!(config.hugepage_size, Some(2 << 20));
///
/// let error = "size=512M,hugepages=maybe".parse::<MemoryConfig>().unwrap_err();
/// assert!(error.to_string().contains("hugepages"));
/// ```
///
/// | key | values | meaning |
/// |---|---|---|
/// | `size` | bytes, with `K`, `M`, `G` or `T` | total guest RAM (used by builders; a [`MemoryLayout`](crate::MemoryLayout) fixes it otherwise) |
/// | `shared` | `on`/`off` | a `memfd` mapped `MAP_SHARED`, which another process (vhost-user) can map |
/// | `hugepages` | `on`/`off` | hugetlb pages: `MAP_HUGETLB`, or `MFD_HUGETLB` when shared |
/// | `hugepage_size` | `2M`, `1G`, ... | the hugetlb page size; the host default when absent |
/// | `mem_path` | a directory on hugetlbfs | back RAM with a file there, like QEMU's `-mem-path` |
/// | `thp` | `on`/`off` | `MADV_HUGEPAGE`: transparent hugepages |
/// | `mergeable` | `on`/`off` | `MADV_MERGEABLE`: let KSM merge identical pages |
/// | `prefault` | `on`/`off` | fault every page in before the guest runs |
/// | `reserve` | `on`/`off` | reserve swap/commit for 4 KiB-page memory instead of `MAP_NORESERVE` (hugetlb memory is always reserved) |
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryConfig {
    /// Total guest RAM in bytes, if given.
    pub size: Option<u64>,
    /// Share the memory through a memfd.
    pub shared: bool,
    /// Use hugetlb pages.
    pub hugepages: bool,
    /// The hugetlb page size in bytes; the host default when `None`.
    pub hugepage_size: Option<u64>,
    /// A hugetlbfs directory to create the backing file in.
    pub mem_path: Option<PathBuf>,
    /// Ask for transparent hugepages.
    pub thp: bool,
    /// Let KSM merge identical pages.
    pub mergeable: bool,
    /// Fault every page in before returning.
    pub prefault: bool,
    /// Reserve commit for 4 KiB-page memory (no `MAP_NORESERVE`).
    pub reserve: bool,
}

impl MemoryConfig {
    /// Whether the memory comes from the hugetlb pool (hugepages or a hugetlbfs file).
    pub fn uses_hugetlb(&self) -> bool {
        self.hugepages || self.mem_path.is_some()
    }
}

impl FromStr for MemoryConfig {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let mut config = MemoryConfig::default();
        let mut seen: Vec<&str> = Vec::new();
        for item in text.split(',').filter(|item| !item.trim().is_empty()) {
            let (key, value) = item.split_once('=').ok_or_else(|| Error::Option {
                key: item.trim().to_string(),
                value: String::new(),
                expected: "key=value".to_string(),
            })?;
            let (key, value) = (key.trim(), value.trim());
            if seen.contains(&key) {
                return Err(option_error(key, value, "to be given once"));
            }
            seen.push(key);
            match key {
                "size" => config.size = Some(parse_size(key, value)?),
                "shared" => config.shared = parse_switch(key, value)?,
                "hugepages" => config.hugepages = parse_switch(key, value)?,
                "hugepage_size" => config.hugepage_size = Some(parse_size(key, value)?),
                "mem_path" if !value.is_empty() => config.mem_path = Some(PathBuf::from(value)),
                "mem_path" => return Err(option_error(key, value, "a directory on hugetlbfs")),
                "thp" => config.thp = parse_switch(key, value)?,
                "mergeable" => config.mergeable = parse_switch(key, value)?,
                "prefault" => config.prefault = parse_switch(key, value)?,
                "reserve" => config.reserve = parse_switch(key, value)?,
                _ => {
                    return Err(Error::UnknownOption {
                        key: key.to_string(),
                    })
                }
            }
        }
        Ok(config)
    }
}

impl fmt::Display for MemoryConfig {
    /// Writes the options back in the form [`FromStr`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let switch = |on: bool| if on { "on" } else { "off" };
        let mut items = Vec::new();
        if let Some(size) = self.size {
            items.push(format!("size={}", format_size(size)));
        }
        items.push(format!("shared={}", switch(self.shared)));
        items.push(format!("hugepages={}", switch(self.hugepages)));
        if let Some(size) = self.hugepage_size {
            items.push(format!("hugepage_size={}", format_size(size)));
        }
        if let Some(path) = &self.mem_path {
            items.push(format!("mem_path={}", path.display()));
        }
        items.push(format!("thp={}", switch(self.thp)));
        items.push(format!("mergeable={}", switch(self.mergeable)));
        items.push(format!("prefault={}", switch(self.prefault)));
        items.push(format!("reserve={}", switch(self.reserve)));
        f.write_str(&items.join(","))
    }
}

fn option_error(key: &str, value: &str, expected: &str) -> Error {
    Error::Option {
        key: key.to_string(),
        value: value.to_string(),
        expected: expected.to_string(),
    }
}

fn parse_switch(key: &str, value: &str) -> Result<bool, Error> {
    match value {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(option_error(key, value, "on or off")),
    }
}

/// Parses `512M`, `2M`, `1G`, `4096`, `64K`, `1T` (binary multiples).
pub(crate) fn parse_size(key: &str, value: &str) -> Result<u64, Error> {
    let expected = "a size such as 4096, 64K, 2M or 1G";
    let (digits, shift) = match value.chars().last() {
        Some('K' | 'k') => (&value[..value.len() - 1], 10),
        Some('M' | 'm') => (&value[..value.len() - 1], 20),
        Some('G' | 'g') => (&value[..value.len() - 1], 30),
        Some('T' | 't') => (&value[..value.len() - 1], 40),
        _ => (value, 0),
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| option_error(key, value, expected))?;
    number
        .checked_mul(1 << shift)
        .filter(|&size| size > 0)
        .ok_or_else(|| option_error(key, value, expected))
}

/// Writes a size with the largest binary suffix that divides it.
pub(crate) fn format_size(size: u64) -> String {
    for (shift, suffix) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if size >= 1 << shift && size % (1 << shift) == 0 {
            return format!("{}{suffix}", size >> shift);
        }
    }
    size.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_string_is_the_default_configuration() {
        assert_eq!("".parse::<MemoryConfig>().unwrap(), MemoryConfig::default());
    }

    #[test]
    fn every_key_parses() {
        let config: MemoryConfig = "size=1G,shared=on,hugepages=on,hugepage_size=1G,\
             mem_path=/dev/hugepages,thp=off,mergeable=off,prefault=on,reserve=on"
            .parse()
            .unwrap();

        assert_eq!(config.size, Some(1 << 30));
        assert!(config.shared && config.hugepages && config.prefault && config.reserve);
        assert_eq!(config.hugepage_size, Some(1 << 30));
        assert_eq!(config.mem_path, Some(PathBuf::from("/dev/hugepages")));
        assert!(!config.thp && !config.mergeable);
    }

    #[test]
    fn display_round_trips_through_parse() {
        let config: MemoryConfig = "size=3G,mergeable=on,thp=on,prefault=on".parse().unwrap();

        let again: MemoryConfig = config.to_string().parse().unwrap();

        assert_eq!(again, config);
    }

    #[test]
    fn unknown_key_is_named() {
        let error = "size=1G,hugepage=on".parse::<MemoryConfig>().unwrap_err();

        assert!(matches!(&error, Error::UnknownOption { key } if key == "hugepage"));
        assert!(error.to_string().contains("hugepage_size"), "{error}");
    }

    #[test]
    fn bad_switch_value_names_key_value_and_what_is_expected() {
        let error = "thp=maybe".parse::<MemoryConfig>().unwrap_err();

        assert_eq!(
            error.to_string(),
            "memory option thp=maybe is invalid: expected on or off"
        );
    }

    #[test]
    fn bad_sizes_are_refused() {
        for text in [
            "size=",
            "size=0",
            "size=12X",
            "size=-1G",
            "size=99999999999T",
        ] {
            assert!(
                matches!(text.parse::<MemoryConfig>(), Err(Error::Option { .. })),
                "{text}"
            );
        }
    }

    #[test]
    fn item_without_equals_and_repeated_key_are_refused() {
        assert!("prefault".parse::<MemoryConfig>().is_err());
        assert!("thp=on,thp=off".parse::<MemoryConfig>().is_err());
    }

    #[test]
    fn sizes_format_with_the_largest_suffix() {
        assert_eq!(format_size(2 << 20), "2M");
        assert_eq!(format_size(1 << 30), "1G");
        assert_eq!(format_size(1536 << 10), "1536K");
        assert_eq!(format_size(1000), "1000");
    }
}
