// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Cloud Hypervisor's `VmConfig` (the JSON of `vm.create`) as the runner's
//! [`Options`]: the parts kvmkit has are taken; its other fields are taken only at
//! their defaults (absent, `null`, `false`, empty, or the value Cloud Hypervisor
//! itself fills in), and otherwise refused by name, as the command line refuses them.

use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::options::{
    parse_console, parse_disk, parse_memory, parse_net, parse_rng, ConsoleMode, Options,
};

/// How a field kvmkit lacks may appear and still be taken.
#[derive(Clone, Copy)]
enum Taken {
    /// Absent, `null`, `false`, `0`, `""`, `[]` or `{}`.
    Empty,
    /// Empty, or any of these values (Cloud Hypervisor's defaults, which its clients
    /// send back).
    Or(&'static [Scalar]),
    /// Anything: it names or places the device and changes nothing here.
    Any,
}

/// A JSON scalar for a table of defaults.
#[derive(Clone, Copy)]
enum Scalar {
    Bool(bool),
    Int(u64),
    Str(&'static str),
}

impl Scalar {
    fn matches(self, value: &Value) -> bool {
        match self {
            Scalar::Bool(b) => value.as_bool() == Some(b),
            Scalar::Int(n) => value.as_u64() == Some(n),
            Scalar::Str(s) => value.as_str() == Some(s),
        }
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_u64() == Some(0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// Checks `object`'s fields (at `at`, for messages) against what kvmkit takes:
/// `supported` ones are the caller's; `defaults` are taken as they allow.
fn check(
    object: &Map<String, Value>,
    at: &str,
    supported: &[&str],
    defaults: &[(&str, Taken)],
) -> Result<(), String> {
    for (key, value) in object {
        if supported.contains(&key.as_str()) {
            continue;
        }
        let Some((_, default)) = defaults.iter().find(|(name, _)| name == key) else {
            return Err(format!(
                "unknown field `{at}{key}` (kvmkit takes: {})",
                supported.join(", ")
            ));
        };
        let taken = match default {
            Taken::Any => true,
            Taken::Empty => is_empty(value),
            Taken::Or(values) => is_empty(value) || values.iter().any(|v| v.matches(value)),
        };
        if !taken {
            return Err(format!(
                "`{at}{key}` = {value} is a Cloud Hypervisor option kvmkit does not support"
            ));
        }
    }
    Ok(())
}

fn object<'a>(value: &'a Value, at: &str) -> Result<&'a Map<String, Value>, String> {
    value
        .as_object()
        .ok_or_else(|| format!("`{at}` must be an object"))
}

fn string<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<Option<&'a str>, String> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("`{at}{key}` must be a string")),
    }
}

fn boolean(object: &Map<String, Value>, key: &str, at: &str) -> Result<bool, String> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format!("`{at}{key}` must be true or false")),
    }
}

fn integer(object: &Map<String, Value>, key: &str, at: &str) -> Result<Option<u64>, String> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("`{at}{key}` must be a non-negative integer")),
    }
}

/// Cloud Hypervisor's per-device fields kvmkit takes at their defaults.
const DEVICE: [(&str, Taken); 4] = [
    ("iommu", Taken::Empty),
    ("id", Taken::Any),
    ("pci_segment", Taken::Empty),
    ("pci_device_id", Taken::Any),
];

/// The runner's options for the VM `config` describes (a `VmConfig`), or what is
/// wrong with it, naming the field.
pub fn options(config: &Value) -> Result<Options, String> {
    let config = object(config, "VmConfig")?;
    check(
        config,
        "",
        &[
            "payload", "cpus", "memory", "disks", "net", "rng", "serial", "console", "pvpanic",
        ],
        &[
            ("rate_limit_groups", Taken::Empty),
            ("balloon", Taken::Empty),
            ("fs", Taken::Empty),
            ("generic_vhost_user", Taken::Empty),
            ("pmem", Taken::Empty),
            ("debug_console", Taken::Any),
            ("devices", Taken::Empty),
            ("user_devices", Taken::Empty),
            ("vdpa", Taken::Empty),
            ("vsock", Taken::Empty),
            ("numa", Taken::Empty),
            ("iommu", Taken::Empty),
            ("watchdog", Taken::Empty),
            ("rtc", Taken::Empty),
            ("pci_segments", Taken::Empty),
            ("platform", Taken::Empty),
            ("tpm", Taken::Empty),
            ("landlock_enable", Taken::Empty),
            ("landlock_rules", Taken::Empty),
        ],
    )?;
    let payload = object(
        config.get("payload").ok_or("`payload` is required")?,
        "payload",
    )?;
    check(
        payload,
        "payload.",
        &["kernel", "initramfs", "cmdline"],
        &[("firmware", Taken::Empty)],
    )?;
    let kernel = string(payload, "kernel", "payload.")?
        .ok_or("`payload.kernel` is required: kvmkit boots a kernel, not firmware")?;
    let mut options =
        Options::from_args(["kvmkit", "--kernel", kernel]).map_err(|e| e.to_string())?;
    options.initramfs = string(payload, "initramfs", "payload.")?.map(PathBuf::from);
    if let Some(cmdline) = string(payload, "cmdline", "payload.")? {
        options.cmdline = cmdline.to_string();
    }
    if let Some(cpus) = config.get("cpus") {
        options.cpus = cpus_of(object(cpus, "cpus")?)?;
    }
    if let Some(memory) = config.get("memory") {
        options.memory = parse_memory(&memory_of(object(memory, "memory")?)?)?;
    }
    options.disk = list(config, "disks")?
        .iter()
        .map(|disk| parse_disk(&disk_of(object(disk, "disks[]")?)?))
        .collect::<Result<_, _>>()?;
    options.net = list(config, "net")?
        .iter()
        .map(|net| parse_net(&net_of(object(net, "net[]")?)?))
        .collect::<Result<_, _>>()?;
    if let Some(rng) = config.get("rng").filter(|rng| !rng.is_null()) {
        let rng = object(rng, "rng")?;
        check(rng, "rng.", &["src"], &DEVICE)?;
        if let Some(src) = string(rng, "src", "rng.")? {
            options.rng = parse_rng(&format!("src={src}"))?;
        }
    }
    if let Some(serial) = config.get("serial").filter(|s| !s.is_null()) {
        options.serial = console_of(object(serial, "serial")?, "serial.")?;
    }
    if let Some(console) = config.get("console").filter(|c| !c.is_null()) {
        options.console = console_of(object(console, "console")?, "console.")?;
    }
    options.pvpanic = boolean(config, "pvpanic", "")?;
    Ok(options)
}

fn list<'a>(config: &'a Map<String, Value>, key: &str) -> Result<&'a [Value], String> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(format!("`{key}` must be a list")),
    }
}

fn cpus_of(cpus: &Map<String, Value>) -> Result<u32, String> {
    check(
        cpus,
        "cpus.",
        &["boot_vcpus", "max_vcpus"],
        &[
            ("kvm_hyperv", Taken::Empty),
            ("max_phys_bits", Taken::Or(&[Scalar::Int(46)])),
            ("nested", Taken::Or(&[Scalar::Bool(true)])),
            ("features", Taken::Any),
            ("topology", Taken::Empty),
            ("affinity", Taken::Empty),
            ("core_scheduling", Taken::Or(&[Scalar::Str("Vm")])),
            ("profile", Taken::Or(&[Scalar::Str("Host")])),
        ],
    )?;
    let boot = integer(cpus, "boot_vcpus", "cpus.")?.ok_or("`cpus.boot_vcpus` is required")?;
    if let Some(max) = integer(cpus, "max_vcpus", "cpus.")? {
        if max != boot {
            return Err(format!(
                "`cpus.max_vcpus` = {max} (vCPU hotplug) is a Cloud Hypervisor option kvmkit does \
                 not support: give it as boot_vcpus"
            ));
        }
    }
    crate::options::parse_cpus(&format!("boot={boot}"))
}

fn memory_of(memory: &Map<String, Value>) -> Result<String, String> {
    check(
        memory,
        "memory.",
        crate::options::MEMORY.supported,
        &[
            ("hotplug_method", Taken::Or(&[Scalar::Str("Acpi")])),
            ("hotplug_size", Taken::Empty),
            ("hotplugged_size", Taken::Empty),
            ("zones", Taken::Empty),
        ],
    )?;
    let size = integer(memory, "size", "memory.")?.ok_or("`memory.size` is required")?;
    let mut text = format!("size={size}");
    for key in [
        "mergeable",
        "shared",
        "hugepages",
        "prefault",
        "reserve",
        "thp",
    ] {
        let on = if boolean(memory, key, "memory.")? {
            "on"
        } else {
            "off"
        };
        text.push_str(&format!(",{key}={on}"));
    }
    if let Some(size) = integer(memory, "hugepage_size", "memory.")? {
        text.push_str(&format!(",hugepage_size={size}"));
    }
    Ok(text)
}

/// A value for the command line's `key=value` lists, quoted so that commas stay in it.
fn quoted(value: &str) -> Result<String, String> {
    if value.contains('"') {
        return Err(format!(
            "`{value}`: a value with a double quote is not taken"
        ));
    }
    Ok(format!("\"{value}\""))
}

fn disk_of(disk: &Map<String, Value>) -> Result<String, String> {
    let mut defaults = DEVICE.to_vec();
    defaults.extend([
        ("direct", Taken::Empty),
        ("num_queues", Taken::Or(&[Scalar::Int(1)])),
        ("queue_size", Taken::Or(&[Scalar::Int(128)])),
        ("vhost_user", Taken::Empty),
        ("vhost_socket", Taken::Empty),
        ("rate_limiter_config", Taken::Empty),
        ("rate_limit_group", Taken::Empty),
        ("queue_affinity", Taken::Empty),
        ("backing_files", Taken::Empty),
        ("sparse", Taken::Or(&[Scalar::Bool(true)])),
        ("image_type", Taken::Or(&[Scalar::Str("Raw")])),
        (
            "lock_granularity",
            Taken::Or(&[Scalar::Str("Full"), Scalar::Str("ByteRange")]),
        ),
    ]);
    check(disk, "disks[].", &["path", "readonly", "serial"], &defaults)?;
    let path = string(disk, "path", "disks[].")?.ok_or("`disks[].path` is required")?;
    let mut text = format!("path={}", quoted(path)?);
    if boolean(disk, "readonly", "disks[].")? {
        text.push_str(",readonly=on");
    }
    if let Some(serial) = string(disk, "serial", "disks[].")? {
        text.push_str(&format!(",serial={}", quoted(serial)?));
    }
    Ok(text)
}

fn net_of(net: &Map<String, Value>) -> Result<String, String> {
    let mut defaults = DEVICE.to_vec();
    defaults.extend([
        ("num_queues", Taken::Or(&[Scalar::Int(2)])),
        ("queue_size", Taken::Or(&[Scalar::Int(256)])),
        ("vhost_user", Taken::Empty),
        ("vhost_socket", Taken::Empty),
        ("vhost_mode", Taken::Or(&[Scalar::Str("Client")])),
        ("rate_limiter_config", Taken::Empty),
        ("host_mac", Taken::Empty),
        ("mtu", Taken::Empty),
        // UDP fragmentation offload: kvmkit never offers it (Linux guests no longer
        // use it), on or off.
        ("offload_ufo", Taken::Any),
    ]);
    let supported = ["tap", "ip", "mask", "mac", "offload_tso", "offload_csum"];
    check(net, "net[].", &supported, &defaults)?;
    let mut items = Vec::new();
    for key in ["tap", "ip", "mask", "mac"] {
        let value = string(net, key, "net[].")?.unwrap_or_default();
        items.push(format!("{key}={}", quoted(value)?));
    }
    for key in ["offload_tso", "offload_csum"] {
        // Absent: Cloud Hypervisor's default, on.
        if net.contains_key(key) && !boolean(net, key, "net[].")? {
            items.push(format!("{key}=off"));
        }
    }
    Ok(items.join(","))
}

fn console_of(console: &Map<String, Value>, at: &str) -> Result<ConsoleMode, String> {
    check(
        console,
        at,
        &["mode", "file"],
        &[
            DEVICE[0],
            DEVICE[1],
            DEVICE[2],
            DEVICE[3],
            ("socket", Taken::Empty),
            ("iobase", Taken::Any),
        ],
    )?;
    let mode = string(console, "mode", at)?.ok_or_else(|| format!("`{at}mode` is required"))?;
    match mode {
        "File" => {
            let file = string(console, "file", at)?
                .ok_or_else(|| format!("`{at}file` is required with mode File"))?;
            parse_console(&format!("file={}", quoted(file)?))
        }
        "Tty" => Ok(ConsoleMode::Tty),
        "Null" => Ok(ConsoleMode::Null),
        "Off" => Ok(ConsoleMode::Off),
        "Pty" | "Socket" => Err(format!(
            "`{at}mode` = {mode} is a Cloud Hypervisor option kvmkit does not support"
        )),
        other => Err(format!("`{at}mode` = {other}: give Off, Null, Tty or File")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_vm_config_as_cloud_hypervisor_fills_it_in_is_taken() {
        let config = json!({
            "cpus": {"boot_vcpus": 2, "max_vcpus": 2, "kvm_hyperv": false, "max_phys_bits": 46,
                     "features": {"amx": false}, "nested": true, "core_scheduling": "Vm",
                     "profile": "Host"},
            "memory": {"size": 268435456, "mergeable": false, "hotplug_method": "Acpi",
                       "shared": false, "hugepages": false, "prefault": false,
                       "reserve": false, "thp": true},
            "payload": {"kernel": "/boot/vmlinuz", "initramfs": "/boot/initrd",
                        "cmdline": "console=ttyS0 root=/dev/vda"},
            "disks": [{"path": "/tmp/a,b.img", "readonly": true, "direct": false,
                       "iommu": false, "num_queues": 1, "queue_size": 128,
                       "vhost_user": false, "id": "_disk0", "serial": "data"}],
            "net": [{"tap": "", "ip": "192.168.249.1", "mask": "255.255.255.0",
                     "mac": "12:34:56:78:90:ab", "iommu": false, "num_queues": 2,
                     "queue_size": 256, "vhost_user": false, "vhost_mode": "Client",
                     "offload_tso": true, "offload_ufo": true, "offload_csum": true}],
            "rng": {"src": "/dev/urandom", "iommu": false},
            "serial": {"mode": "Tty"},
            "console": {"mode": "Off", "iommu": false},
            "debug_console": {"mode": "Off", "iobase": 233},
            "pvpanic": false, "iommu": false, "watchdog": false,
            "landlock_enable": false
        });

        let options = options(&config).unwrap();

        assert_eq!(options.cpus, 2);
        assert_eq!(options.memory.size, Some(256 << 20));
        assert!(options.memory.thp);
        assert_eq!(options.kernel, Some(PathBuf::from("/boot/vmlinuz")));
        assert_eq!(options.cmdline, "console=ttyS0 root=/dev/vda");
        assert_eq!(options.disk[0].path, PathBuf::from("/tmp/a,b.img"));
        assert!(options.disk[0].readonly);
        assert_eq!(options.net[0].tap, None);
        assert_eq!(
            options.net[0].mac,
            Some([0x12, 0x34, 0x56, 0x78, 0x90, 0xab])
        );
        assert!(options.net[0].host.is_some());
        assert_eq!(
            (options.serial, options.console),
            (ConsoleMode::Tty, ConsoleMode::Off)
        );
    }

    #[test]
    fn a_net_config_with_offloads_off_keeps_them_off() {
        let config = json!({
            "payload": {"kernel": "/k"},
            "net": [{"tap": "t0", "offload_tso": false, "offload_ufo": false},
                    {"tap": "t1", "offload_csum": false},
                    {"tap": "t2", "offload_tso": true, "offload_csum": true}],
        });

        let options = options(&config).unwrap();

        let offloads: Vec<_> = options
            .net
            .iter()
            .map(|net| (net.offload_tso, net.offload_csum))
            .collect();
        assert_eq!(offloads, [(false, true), (true, false), (true, true)]);
    }

    #[test]
    fn what_kvmkit_lacks_is_refused_by_name_and_what_is_wrong_is_named() {
        let kernel = json!({"kernel": "/k"});
        for (config, expected) in [
            (json!({"payload": {"firmware": "/fw"}}), "payload.firmware"),
            (
                json!({"payload": kernel, "cpus": {"boot_vcpus": 1, "max_vcpus": 4}}),
                "max_vcpus",
            ),
            (json!({"payload": kernel, "fs": [{"tag": "x"}]}), "`fs`"),
            (
                json!({"payload": kernel, "memory": {"size": 1, "hotplug_size": 9}}),
                "hotplug_size",
            ),
            (
                json!({"payload": kernel, "disks": [{"path": "/a", "vhost_user": true}]}),
                "vhost_user",
            ),
            (
                json!({"payload": kernel, "serial": {"mode": "Pty"}}),
                "serial.mode",
            ),
            (
                json!({"payload": kernel, "bogus": 1}),
                "unknown field `bogus`",
            ),
            (
                json!({"payload": kernel, "disks": [{"readonly": true}]}),
                "disks[].path",
            ),
            (
                json!({"payload": kernel, "cpus": {"boot_vcpus": "two"}}),
                "cpus.boot_vcpus",
            ),
            (json!({"cpus": {"boot_vcpus": 1}}), "payload"),
            (json!([1, 2]), "VmConfig"),
        ] {
            let error = options(&config).unwrap_err();
            assert!(error.contains(expected), "{config}: {error}");
        }
    }
}
