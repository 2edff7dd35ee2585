// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The command line, in Cloud Hypervisor's dialect: options whose values are
//! comma-separated `key=value` lists.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use clap::{ArgAction, Parser};
use kvmkit::memory::MemoryConfig;
use kvmkit::seccomp::SeccompPolicy;

use crate::dialect::{switch, Item, Keys};

/// Boot a Linux VM on KVM.
///
/// Options and their values follow Cloud Hypervisor's: a command line written for it
/// runs as written, or is refused naming the option kvmkit does not support.
#[derive(Debug, Clone, Parser)]
#[command(name = "kvmkit", version, about, after_help = AFTER_HELP)]
pub struct Options {
    /// The kernel: a bzImage, or an ELF vmlinux (entered through PVH when it has the
    /// note). Without it, `--api-socket` waits for the VM's `vm.create` and `vm.boot`.
    #[arg(long, value_name = "PATH", required_unless_present_any = ["api_socket", "restore"])]
    pub kernel: Option<PathBuf>,
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
    /// virtio-blk disks: `path=IMG[,readonly=on][,serial=ID]`, one value each
    /// (`--disk path=a path=b`, or the option repeated).
    #[arg(long, value_name = "path=IMG,...", num_args = 1.., action = ArgAction::Append, value_parser = parse_disk)]
    pub disk: Vec<DiskOption>,
    /// virtio-net devices on taps: `tap=NAME[,mac=MAC][,ip=ADDR,mask=MASK]
    /// [,offload_tso=off][,offload_csum=off]`; an empty tap= makes a tap, and ip/mask
    /// give the host's side that address and bring it up.
    #[arg(long, value_name = "tap=NAME,...", num_args = 1.., action = ArgAction::Append, value_parser = parse_net)]
    pub net: Vec<NetOption>,
    /// The virtio-rng device's entropy source: src=PATH. As in Cloud Hypervisor, the
    /// device is always there, on /dev/urandom unless this says otherwise.
    #[arg(long, value_name = "src=PATH", num_args = 0..=1, default_value = "src=/dev/urandom", default_missing_value = "src=/dev/urandom", value_parser = parse_rng)]
    pub rng: RngOption,
    /// The serial console (COM1, ttyS0): tty, file=PATH, null or off.
    #[arg(long, value_name = "MODE", default_value = "null", value_parser = parse_console)]
    pub serial: ConsoleMode,
    /// The virtio console (hvc0): tty, file=PATH, null or off.
    #[arg(long, value_name = "MODE", default_value = "tty", value_parser = parse_console)]
    pub console: ConsoleMode,
    /// A pvpanic device (ACPI QEMU0001, port 0x505); kvmkit always has one, so that a
    /// guest's panic ends the VM with status 3: the flag is taken for Cloud
    /// Hypervisor's command lines.
    #[arg(long)]
    pub pvpanic: bool,
    /// Print exits per vCPU, device counters and the guest memory report at the end,
    /// however the run ends.
    #[arg(long)]
    pub stats: bool,
    /// Confine the vCPU and I/O threads with seccomp filters: true (a forbidden call
    /// ends the VMM, naming it), log (the kernel logs it) or false.
    #[arg(long, value_name = "true|false|log", default_value = "true", value_parser = parse_seccomp)]
    pub seccomp: SeccompPolicy,
    /// Cloud Hypervisor's REST API on a Unix socket: path=PATH (or PATH). A VM the
    /// command line describes boots at once; without `--kernel`, the VMM waits for
    /// `vm.create` and `vm.boot`. The process lives on after the VM until
    /// `vmm.shutdown`.
    #[arg(long, value_name = "path=PATH", value_parser = parse_api_socket)]
    pub api_socket: Option<PathBuf>,
    /// Restore a VM from a snapshot instead of booting one:
    /// source_url=file:///DIR[,resume=on]. The VM is made as the snapshot says (its
    /// other options here are not taken), and waits paused for `vm.resume` unless
    /// `resume` is on.
    #[arg(long, value_name = "source_url=file:///DIR", value_parser = parse_restore, conflicts_with_all = ["kernel", "initramfs"])]
    pub restore: Option<RestoreOption>,
    /// Cloud Hypervisor's verbosity: taken, and changes nothing (kvmkit logs nothing).
    #[arg(short = 'v', action = ArgAction::Count, hide = true)]
    pub verbose: u8,
}

/// Cloud Hypervisor's options kvmkit does not have (v54, its default and optional
/// features): refused by name, so that a command line for it is never taken as
/// malformed.
pub const UNSUPPORTED_OPTIONS: &[&str] = &[
    "--balloon",
    "--dbus-object-path",
    "--dbus-service-name",
    "--dbus-system-bus",
    "--debug-console",
    "--device",
    "--event-monitor",
    "--firmware",
    "--fs",
    "--fw-cfg-config",
    "--gdb",
    "--generic-vhost-user",
    "--ivshmem",
    "--landlock",
    "--landlock-rules",
    "--log-file",
    "--log-format",
    "--memory-zone",
    "--no-shutdown",
    "--numa",
    "--pci-segment",
    "--platform",
    "--pmem",
    "--rate-limit-group",
    "--rtc",
    "--sgx-epc",
    "--tpm",
    "--user-device",
    "--vdpa",
    "--vsock",
    "--watchdog",
];

impl Options {
    /// The options of `args` (the program's name first), as [`Parser::try_parse_from`]
    /// reads them, after refusing any of Cloud Hypervisor's options kvmkit lacks
    /// ([`UNSUPPORTED_OPTIONS`]) as not supported, naming it.
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        for arg in args.iter().skip(1) {
            let Some(arg) = arg.to_str() else { continue };
            if arg == "--" {
                break;
            }
            let name = arg.split_once('=').map_or(arg, |(name, _)| name);
            if UNSUPPORTED_OPTIONS.contains(&name) {
                let mut command = <Self as clap::CommandFactory>::command();
                return Err(command.error(
                    clap::error::ErrorKind::UnknownArgument,
                    format!("{name} is a Cloud Hypervisor option kvmkit does not support"),
                ));
            }
        }
        Self::try_parse_from(args)
    }
}

/// The end of `--help`: the terminal's escape and the exit statuses.
const AFTER_HELP: &str = "\
On a terminal, every key goes to the guest (Ctrl-C, Ctrl-Z and Ctrl-\\ included); \
Ctrl-A x ends the VM (as SIGINT does), Ctrl-A Ctrl-A sends one Ctrl-A.

Exit status: 0 the guest powered off or rebooted (a triple fault is a reset); 1 an \
error before the guest ran, or a vCPU ended abnormally; 2 a usage error; 3 the guest \
panicked (it said so on pvpanic); 101 a vCPU thread panicked; 128+N signal N (Ctrl-A \
x: 130); 159 a system call outside the seccomp filter.";

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
    /// The tap's name; `None` (an empty `tap=`, or none) makes a new tap.
    pub tap: Option<String>,
    /// The guest's MAC address; `None` for a random locally administered one.
    pub mac: Option<[u8; 6]>,
    /// The host side's address and netmask, which also bring the tap up.
    pub host: Option<(Ipv4Addr, Ipv4Addr)>,
    /// Offer the guest TCP segmentation offload (`offload_tso`, on by default).
    pub offload_tso: bool,
    /// Offer the guest checksum offload (`offload_csum`, on by default), without
    /// which there is no segmentation offload either.
    pub offload_csum: bool,
}

/// A `--restore`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreOption {
    /// The snapshot's directory.
    pub dir: PathBuf,
    /// Run the restored VM at once rather than wait paused.
    pub resume: bool,
    /// Read all of guest RAM in at the restore rather than as the guest touches it.
    pub prefault: bool,
}

/// A `--rng`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RngOption {
    /// Where the device's bytes come from.
    pub src: PathBuf,
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

const CPUS: Keys = Keys {
    supported: &["boot"],
    defaults: &[("kvm_hyperv", &["off"])],
    unsupported: &[
        "max",
        "topology",
        "max_phys_bits",
        "affinity",
        "features",
        "nested",
        "core_scheduling",
    ],
};

/// The keys `kvmkit_memory::MemoryConfig` reads, and Cloud Hypervisor's others.
pub(crate) const MEMORY: Keys = Keys {
    supported: &[
        "size",
        "mergeable",
        "shared",
        "hugepages",
        "hugepage_size",
        "prefault",
        "reserve",
        "thp",
    ],
    defaults: &[("hotplug_method", &["acpi"])],
    unsupported: &["hotplug_size", "hotplugged_size"],
};

/// Cloud Hypervisor's per-device keys kvmkit takes at their defaults: no IOMMU, the
/// default PCI placement (kvmkit's devices are on virtio-mmio), any id.
const DEVICE_DEFAULTS: [(&str, &[&str]); 4] = [
    ("iommu", &["off", "false"]),
    ("id", &["*"]),
    ("pci_segment", &["0"]),
    ("pci_device_id", &["*"]),
];

const DISK: Keys = Keys {
    supported: &["path", "readonly", "serial"],
    defaults: &[
        DEVICE_DEFAULTS[0],
        DEVICE_DEFAULTS[1],
        DEVICE_DEFAULTS[2],
        DEVICE_DEFAULTS[3],
        ("direct", &["off", "false"]),
        ("num_queues", &["1"]),
        ("vhost_user", &["off", "false"]),
        ("image_type", &["raw"]),
        // kvmkit locks the whole image file, which for a raw image is its byte range.
        ("lock_granularity", &["full", "byte-range"]),
        ("backing_files", &["off", "false"]),
    ],
    unsupported: &[
        "queue_size",
        "socket",
        "bw_size",
        "bw_one_time_burst",
        "bw_refill_time",
        "ops_size",
        "ops_one_time_burst",
        "ops_refill_time",
        "rate_limit_group",
        "queue_affinity",
        "sparse",
    ],
};

const NET: Keys = Keys {
    supported: &["tap", "mac", "ip", "mask", "offload_tso", "offload_csum"],
    defaults: &[
        DEVICE_DEFAULTS[0],
        DEVICE_DEFAULTS[1],
        DEVICE_DEFAULTS[2],
        DEVICE_DEFAULTS[3],
        ("num_queues", &["2"]),
        ("vhost_user", &["off", "false"]),
        // UDP fragmentation offload, which Linux guests no longer use: kvmkit never
        // offers it, so Cloud Hypervisor's default (on) and off come to the same.
        ("offload_ufo", &["on", "true", "off", "false"]),
    ],
    unsupported: &[
        "fd",
        "host_mac",
        "queue_size",
        "socket",
        "vhost_mode",
        "bw_size",
        "bw_one_time_burst",
        "bw_refill_time",
        "ops_size",
        "ops_one_time_burst",
        "ops_refill_time",
        "mtu",
    ],
};

const RNG: Keys = Keys {
    supported: &["src"],
    defaults: &[DEVICE_DEFAULTS[0], DEVICE_DEFAULTS[2], DEVICE_DEFAULTS[3]],
    unsupported: &[],
};

/// `--serial` and `--console`: a mode, then keys.
const CONSOLE: Keys = Keys {
    supported: &["tty", "null", "off", "file"],
    defaults: &[DEVICE_DEFAULTS[0], DEVICE_DEFAULTS[1]],
    unsupported: &["pty", "socket", "iobase"],
};

/// `boot=N`, N from 1 to 255.
pub fn parse_cpus(text: &str) -> Result<u32, String> {
    let items = CPUS.parse(text)?;
    let item = items
        .first()
        .ok_or_else(|| "give the vCPU count as boot=N".to_string())?;
    match item.value.parse::<u32>() {
        Ok(count @ 1..=255) => Ok(count),
        _ => Err(format!(
            "boot takes a vCPU count from 1 to 255, not `{}`",
            item.value
        )),
    }
}

/// The memory options of `kvmkit_memory::MemoryConfig`; a size is required.
pub fn parse_memory(text: &str) -> Result<MemoryConfig, String> {
    let items = MEMORY.parse(text)?;
    let ours: Vec<String> = items
        .iter()
        .map(|item| format!("{}={}", item.key, item.value))
        .collect();
    let config: MemoryConfig = ours.join(",").parse().map_err(|e| format!("{e}"))?;
    if config.size.is_none() {
        return Err("give the memory size as size=SIZE (e.g. size=512M)".into());
    }
    Ok(config)
}

/// `path=IMG[,readonly=on][,serial=ID]`.
pub fn parse_disk(text: &str) -> Result<DiskOption, String> {
    let mut disk = DiskOption {
        path: PathBuf::new(),
        readonly: false,
        serial: None,
    };
    for Item { key, value, .. } in DISK.parse(text)? {
        match key {
            "path" if value.is_empty() => return Err("path is empty".into()),
            "path" => disk.path = PathBuf::from(value),
            "serial" if value.len() <= 20 => disk.serial = Some(value),
            "serial" => return Err(format!("serial takes at most 20 bytes, not `{value}`")),
            _ => disk.readonly = switch(key, &value)?,
        }
    }
    if disk.path.as_os_str().is_empty() {
        return Err("give the image as path=IMG".into());
    }
    Ok(disk)
}

/// `tap=[NAME][,mac=[MAC]][,ip=[ADDR],mask=[MASK]][,offload_tso=on|off]
/// [,offload_csum=on|off]`: empty values mean what they mean to Cloud Hypervisor (a
/// new tap, a random MAC, no host address, offloads on).
pub fn parse_net(text: &str) -> Result<NetOption, String> {
    let mut net = NetOption {
        tap: None,
        mac: None,
        host: None,
        offload_tso: true,
        offload_csum: true,
    };
    let (mut ip, mut mask) = (None, None);
    for Item { key, value, .. } in NET.parse(text)? {
        if value.is_empty() {
            continue;
        }
        match key {
            "tap" if value.len() < 16 => net.tap = Some(value),
            "tap" => return Err(format!("`{value}` is not a tap name (1 to 15 bytes)")),
            "mac" => net.mac = Some(parse_mac(&value)?),
            "ip" => ip = Some(parse_ipv4("ip", &value)?),
            "mask" => mask = Some(parse_ipv4("mask", &value)?),
            "offload_tso" => net.offload_tso = switch(key, &value)?,
            _ => net.offload_csum = switch(key, &value)?,
        }
    }
    net.host = match (ip, mask) {
        (Some(ip), Some(mask)) if mask_is_contiguous(mask) => Some((ip, mask)),
        (Some(_), Some(mask)) => return Err(format!("mask `{mask}` is not a netmask")),
        (Some(ip), None) => Some((ip, Ipv4Addr::new(255, 255, 255, 0))),
        (None, Some(_)) => return Err("mask is given without ip".into()),
        (None, None) => None,
    };
    Ok(net)
}

fn parse_ipv4(key: &str, value: &str) -> Result<Ipv4Addr, String> {
    value
        .parse()
        .map_err(|_| format!("`{key}` takes an IPv4 address, not `{value}`"))
}

fn mask_is_contiguous(mask: Ipv4Addr) -> bool {
    let bits = u32::from(mask);
    bits.leading_ones() + bits.trailing_zeros() == 32
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

/// A random locally administered unicast MAC address, as Cloud Hypervisor gives a
/// `--net` without `mac=` (a fixed one collides between VMs on one bridge).
pub fn random_mac() -> std::io::Result<[u8; 6]> {
    use std::io::Read;
    let mut mac = [0u8; 6];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut mac)?;
    mac[0] = (mac[0] & !1) | 2;
    Ok(mac)
}

/// `[src=PATH]`.
pub fn parse_rng(text: &str) -> Result<RngOption, String> {
    let mut src = PathBuf::from("/dev/urandom");
    for Item { value, .. } in RNG.parse(text)? {
        if value.is_empty() {
            return Err("src is empty".into());
        }
        src = PathBuf::from(value);
    }
    Ok(RngOption { src })
}

const API_SOCKET: Keys = Keys {
    supported: &["path"],
    defaults: &[],
    unsupported: &["fd"],
};

/// `path=PATH`, or a bare `PATH`, as Cloud Hypervisor's `--api-socket` takes them.
pub fn parse_api_socket(text: &str) -> Result<PathBuf, String> {
    if !text.contains('=') && !text.is_empty() {
        return Ok(PathBuf::from(text));
    }
    match API_SOCKET.parse(text)?.as_slice() {
        [item] if !item.value.is_empty() => Ok(PathBuf::from(&item.value)),
        _ => Err("give the socket as path=PATH".into()),
    }
}

const RESTORE: Keys = Keys {
    supported: &["source_url", "resume", "prefault"],
    defaults: &[],
    unsupported: &[
        "memory_restore_mode",
        "net_fds",
        "vfio_fds",
        "iommufd_fd",
        "zone_updates",
    ],
};

/// `source_url=file:///DIR[,resume=on][,prefault=on]`.
pub fn parse_restore(text: &str) -> Result<RestoreOption, String> {
    let mut dir = None;
    let mut resume = false;
    let mut prefault = false;
    for Item { key, value, .. } in RESTORE.parse(text)? {
        match key {
            "source_url" => match value.strip_prefix("file://") {
                Some(path) if path.starts_with('/') => dir = Some(PathBuf::from(path)),
                _ => return Err(format!("`{value}`: give source_url=file:///DIR")),
            },
            "resume" => resume = switch(key, &value)?,
            _ => prefault = switch(key, &value)?,
        }
    }
    let dir = dir.ok_or_else(|| "give the snapshot as source_url=file:///DIR".to_string())?;
    Ok(RestoreOption {
        dir,
        resume,
        prefault,
    })
}

/// `true`, `false` or `log`, as Cloud Hypervisor's `--seccomp` takes them.
pub fn parse_seccomp(text: &str) -> Result<SeccompPolicy, String> {
    match text {
        "true" => Ok(SeccompPolicy::Enforce),
        "false" => Ok(SeccompPolicy::Off),
        "log" => Ok(SeccompPolicy::Log),
        "errno" => Err("`errno` is a Cloud Hypervisor option kvmkit does not support".into()),
        _ => Err(format!("`{text}`: give true, false or log")),
    }
}

/// `tty`, `file=PATH`, `null` or `off`, then Cloud Hypervisor's keys at their
/// defaults (`file=/tmp/c.log,iommu=off`).
pub fn parse_console(text: &str) -> Result<ConsoleMode, String> {
    let items = CONSOLE.parse(text)?;
    let bad = || format!("`{text}`: give one of tty, file=PATH, null or off");
    let [item] = items.as_slice() else {
        return Err(bad());
    };
    match (item.key, item.has_value) {
        ("tty", false) => Ok(ConsoleMode::Tty),
        ("null", false) => Ok(ConsoleMode::Null),
        ("off", false) => Ok(ConsoleMode::Off),
        ("file", true) if !item.value.is_empty() => {
            Ok(ConsoleMode::File(item.value.clone().into()))
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, clap::Error> {
        Options::try_parse_from(["kvmkit", "--kernel", "vmlinuz"].iter().chain(args))
    }

    #[test]
    fn cloud_hypervisor_style_values_parse() {
        let options = parse(&[
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
        let net = &options.net[0];
        assert_eq!(net.tap.as_deref(), Some("kvmkit0"));
        assert_eq!(net.mac, Some([2, 0, 0, 0, 0, 1]));
        assert!(
            net.offload_tso && net.offload_csum,
            "offloads are on by default"
        );
        assert_eq!(options.console, ConsoleMode::File("/tmp/hvc0".into()));
        assert_eq!(options.rng.src, PathBuf::from("/dev/urandom"));
    }

    #[test]
    fn offloads_turn_off_as_cloud_hypervisors_do_and_ufo_is_taken_either_way() {
        let options = parse(&[
            "--net",
            "tap=t0,offload_tso=off",
            "tap=t1,offload_csum=false,offload_ufo=on",
            "tap=t2,offload_ufo=off",
        ])
        .unwrap();

        let offloads: Vec<_> = options
            .net
            .iter()
            .map(|net| (net.offload_tso, net.offload_csum))
            .collect();
        assert_eq!(offloads, [(false, true), (true, false), (true, true)]);
    }

    #[test]
    fn the_defaults_are_cloud_hypervisors() {
        let options = parse(&[]).unwrap();

        assert_eq!(options.serial, ConsoleMode::Null);
        assert_eq!(options.console, ConsoleMode::Tty);
        assert_eq!(options.memory.size, Some(512 << 20));
        assert_eq!(options.cpus, 1);
        assert_eq!(options.rng.src, PathBuf::from("/dev/urandom"));
        assert!(options.net.is_empty() && options.disk.is_empty());
    }

    #[test]
    fn several_values_follow_one_flag() {
        let options = parse(&[
            "--disk",
            "path=a.img",
            "path=b.img",
            "--net",
            "tap=t0",
            "tap=t1",
            "--rng",
            "src=/dev/hwrng",
        ])
        .unwrap();

        let paths: Vec<_> = options.disk.iter().map(|d| d.path.clone()).collect();
        assert_eq!(paths, [PathBuf::from("a.img"), PathBuf::from("b.img")]);
        let taps: Vec<_> = options.net.iter().map(|n| n.tap.clone()).collect();
        assert_eq!(taps, [Some("t0".to_string()), Some("t1".to_string())]);
        assert_eq!(options.rng.src, PathBuf::from("/dev/hwrng"));
    }

    #[test]
    fn empty_net_values_mean_a_new_tap_a_random_mac_and_no_host_address() {
        let bare = parse_net("tap=,mac=,ip=,mask=").unwrap();
        let host = parse_net("tap=,ip=192.168.249.1,mask=255.255.255.0").unwrap();
        let (first, second) = (random_mac().unwrap(), random_mac().unwrap());

        assert_eq!((bare.tap, bare.mac, bare.host), (None, None, None));
        assert_eq!(
            host.host,
            Some(([192, 168, 249, 1].into(), [255, 255, 255, 0].into()))
        );
        for mac in [first, second] {
            assert_eq!(mac[0] & 0b11, 0b10, "unicast and locally administered");
        }
        assert_ne!(first, second);
    }

    #[test]
    fn a_console_file_takes_cloud_hypervisors_other_keys_at_their_defaults() {
        let with_iommu = parse_console("file=/tmp/c.log,iommu=off").unwrap();
        let quoted = parse_console(r#"file="/tmp/a,b.log""#).unwrap();

        assert_eq!(with_iommu, ConsoleMode::File("/tmp/c.log".into()));
        assert_eq!(quoted, ConsoleMode::File("/tmp/a,b.log".into()));
    }

    #[test]
    fn bad_values_name_what_is_wrong() {
        let cases = [
            (parse_cpus("boot=0").unwrap_err(), "1 to 255"),
            (parse_cpus("cores=2").unwrap_err(), "unknown option `cores`"),
            (parse_cpus("boot=2,max=4").unwrap_err(), "does not support"),
            (parse_memory("hugepages=on").unwrap_err(), "size="),
            (
                parse_memory("size=1G,hotplug_size=1G").unwrap_err(),
                "does not support",
            ),
            (parse_disk("readonly=on").unwrap_err(), "path=IMG"),
            (parse_disk("path=a,path=b").unwrap_err(), "twice"),
            (parse_disk("path=a,readonly=yes").unwrap_err(), "on or off"),
            (parse_disk("path=a,bogus=1").unwrap_err(), "unknown option"),
            (parse_disk("path=a,iommu=on").unwrap_err(), "not supported"),
            (
                parse_disk("path=a,serial=123456789012345678901").unwrap_err(),
                "20 bytes",
            ),
            (parse_net("tap=0123456789abcdefg").unwrap_err(), "tap name"),
            (
                parse_net("tap=t0,mac=01:00:00:00:00:01").unwrap_err(),
                "multicast",
            ),
            (
                parse_net("tap=t0,mac=zz:00:00:00:00:01").unwrap_err(),
                "MAC address",
            ),
            (parse_net("tap=t0,ip=10.0.0.300").unwrap_err(), "IPv4"),
            (
                parse_net("ip=10.0.0.1,mask=255.0.255.0").unwrap_err(),
                "netmask",
            ),
            (parse_net("mask=255.255.255.0").unwrap_err(), "without ip"),
            (parse_net("fd=3").unwrap_err(), "does not support"),
            (parse_net("offload_tso=maybe").unwrap_err(), "on or off"),
            (parse_rng("src=").unwrap_err(), "empty"),
            (parse_console("file=").unwrap_err(), "tty, file=PATH"),
            (parse_console("tty,file=/a").unwrap_err(), "one of"),
            (parse_console("pty").unwrap_err(), "does not support"),
            (
                parse_console("file=/tmp/c.log,bogus=1").unwrap_err(),
                "unknown option",
            ),
            (parse_seccomp("errno").unwrap_err(), "does not support"),
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

    #[test]
    fn a_restore_takes_its_directory_resume_and_prefault() {
        let restore = parse_restore("source_url=file:///snap,resume=on,prefault=on").unwrap();
        let bare = parse_restore("source_url=file:///snap").unwrap();
        let remote = parse_restore("source_url=http://host/snap").unwrap_err();
        let nowhere = parse_restore("resume=on").unwrap_err();

        assert_eq!(
            restore,
            RestoreOption {
                dir: PathBuf::from("/snap"),
                resume: true,
                prefault: true,
            }
        );
        assert!(!bare.resume && !bare.prefault);
        assert!(remote.contains("file:///DIR"), "{remote}");
        assert!(nowhere.contains("source_url"), "{nowhere}");
    }
}
