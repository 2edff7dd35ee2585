// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The command line, in Cloud Hypervisor's dialect: options whose values are
//! comma-separated `key=value` lists.

use std::path::PathBuf;

use clap::Parser;
use kvmkit::memory::MemoryConfig;
use kvmkit::seccomp::SeccompPolicy;

/// Boot a Linux VM on KVM.
#[derive(Debug, Parser)]
#[command(name = "kvmkit", version, about)]
pub struct Options {
    /// The kernel: a bzImage, or an ELF vmlinux (entered through PVH when it has the note).
    #[arg(long, value_name = "PATH")]
    pub kernel: PathBuf,
    /// The initramfs.
    #[arg(long, value_name = "PATH")]
    pub initramfs: Option<PathBuf>,
    /// The kernel command line.
    #[arg(
        long,
        value_name = "STR",
        default_value = "console=ttyS0 reboot=k panic=1"
    )]
    pub cmdline: String,
    /// vCPUs: boot=N.
    #[arg(long, value_name = "boot=N", default_value = "boot=1", value_parser = parse_cpus)]
    pub cpus: u32,
    /// Guest memory: size=512M[,hugepages=on,hugepage_size=2M,mergeable=on,thp=on,shared=on,prefault=on].
    #[arg(long, value_name = "size=SIZE,...", default_value = "size=512M", value_parser = parse_memory)]
    pub memory: MemoryConfig,
    /// A virtio-blk disk: `path=IMG[,readonly=on][,serial=ID]`. May be repeated.
    #[arg(long, value_name = "path=IMG[,readonly=on][,serial=ID]", value_parser = parse_disk)]
    pub disk: Vec<DiskOption>,
    /// A virtio-net device on a tap: tap=NAME[,mac=MAC].
    #[arg(long, value_name = "tap=NAME[,mac=MAC]", value_parser = parse_net)]
    pub net: Option<NetOption>,
    /// A virtio-rng device.
    #[arg(long)]
    pub rng: bool,
    /// The serial console (COM1, ttyS0): tty, file=PATH, null or off.
    #[arg(long, value_name = "MODE", default_value = "tty", value_parser = parse_console)]
    pub serial: ConsoleMode,
    /// The virtio console (hvc0): tty, file=PATH, null or off.
    #[arg(long, value_name = "MODE", default_value = "off", value_parser = parse_console)]
    pub console: ConsoleMode,
    /// Print exits per vCPU, device counters and the guest memory report at the end.
    #[arg(long)]
    pub stats: bool,
    /// Confine the vCPU and I/O threads with seccomp filters: true (a forbidden call
    /// ends the VMM, naming it), log (the kernel logs it) or false.
    #[arg(long, value_name = "true|false|log", default_value = "true", value_parser = parse_seccomp)]
    pub seccomp: SeccompPolicy,
}

/// A `--disk`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskOption {
    /// The image.
    pub path: PathBuf,
    /// Whether the guest may only read it.
    pub readonly: bool,
    /// The serial the guest reads (`/sys/block/vdX/serial`); empty when not given.
    pub serial: Option<String>,
}

/// A `--net`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetOption {
    /// The tap's name.
    pub tap: String,
    /// The guest's MAC address.
    pub mac: [u8; 6],
}

/// Where a console goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleMode {
    /// The VMM's terminal (stdin and stdout).
    Tty,
    /// Output to a file.
    File(PathBuf),
    /// Output discarded.
    Null,
    /// No such console.
    Off,
}

/// The MAC address a `--net` without `mac=` gets: locally administered.
pub const DEFAULT_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// `key=value` pairs, each key once and known.
fn pairs<'a>(text: &'a str, known: &[&str]) -> Result<Vec<(&'a str, &'a str)>, String> {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for item in text.split(',').filter(|item| !item.is_empty()) {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| format!("`{item}` is not key=value"))?;
        if !known.contains(&key) {
            return Err(format!("unknown key `{key}` (known: {})", known.join(", ")));
        }
        if seen.iter().any(|(seen, _)| *seen == key) {
            return Err(format!("`{key}` is given twice"));
        }
        seen.push((key, value));
    }
    Ok(seen)
}

fn switch(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(format!("`{key}` takes on or off, not `{value}`")),
    }
}

/// `boot=N`, N from 1 to 255.
pub fn parse_cpus(text: &str) -> Result<u32, String> {
    let pairs = pairs(text, &["boot"])?;
    let (_, value) = pairs
        .first()
        .ok_or_else(|| "give the vCPU count as boot=N".to_string())?;
    match value.parse::<u32>() {
        Ok(count @ 1..=255) => Ok(count),
        _ => Err(format!(
            "boot takes a vCPU count from 1 to 255, not `{value}`"
        )),
    }
}

/// The memory options of `kvmkit_memory::MemoryConfig`; a size is required.
pub fn parse_memory(text: &str) -> Result<MemoryConfig, String> {
    let config: MemoryConfig = text.parse().map_err(|e| format!("{e}"))?;
    if config.size.is_none() {
        return Err("give the memory size as size=SIZE (e.g. size=512M)".into());
    }
    Ok(config)
}

/// `path=IMG[,readonly=on][,serial=ID]`.
pub fn parse_disk(text: &str) -> Result<DiskOption, String> {
    let mut path = None;
    let mut readonly = false;
    let mut serial = None;
    for (key, value) in pairs(text, &["path", "readonly", "serial"])? {
        match key {
            "path" if !value.is_empty() => path = Some(PathBuf::from(value)),
            "path" => return Err("path is empty".into()),
            "serial" if value.len() <= 20 => serial = Some(value.to_string()),
            "serial" => return Err(format!("serial takes at most 20 bytes, not `{value}`")),
            _ => readonly = switch(key, value)?,
        }
    }
    let path = path.ok_or_else(|| "give the image as path=IMG".to_string())?;
    Ok(DiskOption {
        path,
        readonly,
        serial,
    })
}

/// `tap=NAME[,mac=MAC]`.
pub fn parse_net(text: &str) -> Result<NetOption, String> {
    let mut tap = None;
    let mut mac = DEFAULT_MAC;
    for (key, value) in pairs(text, &["tap", "mac"])? {
        match key {
            "tap" if !value.is_empty() && value.len() < 16 => tap = Some(value.to_string()),
            "tap" => return Err(format!("`{value}` is not a tap name (1 to 15 bytes)")),
            _ => mac = parse_mac(value)?,
        }
    }
    let tap = tap.ok_or_else(|| "give the tap as tap=NAME".to_string())?;
    Ok(NetOption { tap, mac })
}

fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let bad = || format!("`{text}` is not a MAC address like 52:54:00:12:34:56");
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts
            .next()
            .filter(|part| part.len() == 2)
            .ok_or_else(bad)?;
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    if mac[0] & 1 != 0 {
        return Err(format!(
            "`{text}` is a multicast address; a device needs a unicast one"
        ));
    }
    Ok(mac)
}

/// `true`, `false` or `log`, as Cloud Hypervisor's `--seccomp` takes them.
pub fn parse_seccomp(text: &str) -> Result<SeccompPolicy, String> {
    match text {
        "true" => Ok(SeccompPolicy::Enforce),
        "false" => Ok(SeccompPolicy::Off),
        "log" => Ok(SeccompPolicy::Log),
        _ => Err(format!("`{text}`: give true, false or log")),
    }
}

/// `tty`, `file=PATH`, `null` or `off`.
pub fn parse_console(text: &str) -> Result<ConsoleMode, String> {
    match text {
        "tty" => Ok(ConsoleMode::Tty),
        "null" => Ok(ConsoleMode::Null),
        "off" => Ok(ConsoleMode::Off),
        _ => match text.strip_prefix("file=") {
            Some(path) if !path.is_empty() => Ok(ConsoleMode::File(PathBuf::from(path))),
            _ => Err(format!("`{text}`: give tty, file=PATH, null or off")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_hypervisor_style_values_parse() {
        let options = Options::try_parse_from([
            "kvmkit",
            "--kernel",
            "vmlinuz",
            "--cpus",
            "boot=2",
            "--memory",
            "size=256M,hugepages=on,hugepage_size=2M",
            "--disk",
            "path=a.img",
            "--disk",
            "path=b.img,readonly=on,serial=data-1",
            "--net",
            "tap=kvmkit0,mac=02:00:00:00:00:01",
            "--console",
            "file=/tmp/hvc0",
            "--rng",
        ])
        .unwrap();

        assert_eq!(options.cpus, 2);
        assert_eq!(options.memory.size, Some(256 << 20));
        assert!(options.memory.hugepages);
        assert_eq!(options.disk.len(), 2);
        assert!(options.disk[1].readonly);
        assert_eq!(options.disk[1].serial.as_deref(), Some("data-1"));
        assert_eq!(options.disk[0].serial, None);
        let net = options.net.unwrap();
        assert_eq!((net.tap.as_str(), net.mac), ("kvmkit0", [2, 0, 0, 0, 0, 1]));
        assert_eq!(options.console, ConsoleMode::File("/tmp/hvc0".into()));
        assert_eq!(options.serial, ConsoleMode::Tty);
    }

    #[test]
    fn bad_values_name_what_is_wrong() {
        let cases = [
            (parse_cpus("boot=0").unwrap_err(), "1 to 255"),
            (parse_cpus("cores=2").unwrap_err(), "unknown key"),
            (parse_memory("hugepages=on").unwrap_err(), "size="),
            (parse_disk("readonly=on").unwrap_err(), "path=IMG"),
            (parse_disk("path=a,path=b").unwrap_err(), "twice"),
            (parse_disk("path=a,readonly=yes").unwrap_err(), "on or off"),
            (
                parse_disk("path=a,serial=123456789012345678901").unwrap_err(),
                "20 bytes",
            ),
            (parse_net("tap=").unwrap_err(), "tap name"),
            (
                parse_net("tap=t0,mac=01:00:00:00:00:01").unwrap_err(),
                "multicast",
            ),
            (
                parse_net("tap=t0,mac=zz:00:00:00:00:01").unwrap_err(),
                "MAC address",
            ),
            (parse_console("file=").unwrap_err(), "tty, file=PATH"),
        ];

        for (error, expected) in cases {
            assert!(
                error.contains(expected),
                "{error:?} should say {expected:?}"
            );
        }
    }

    #[test]
    fn a_missing_kernel_is_a_usage_error() {
        let result = Options::try_parse_from(["kvmkit", "--cpus", "boot=1"]);

        assert!(result.is_err());
    }
}
