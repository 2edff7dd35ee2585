// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `--api-socket` end to end: the runner with a tiny guest, driven by Cloud
//! Hypervisor's own client (`ch-remote` v54, from `../shared/anchors`) and by
//! `curl --unix-socket`, as Kata Containers and operators drive Cloud Hypervisor.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Where Cloud Hypervisor's client is: `$KVMKIT_ANCHORS`, the workspace's
/// `../shared/anchors`, or `/work/shared/anchors` (this project's machines).
fn ch_remote() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let candidates = std::env::var_os("KVMKIT_ANCHORS")
        .map(PathBuf::from)
        .into_iter()
        .chain([
            workspace.join("../shared/anchors"),
            PathBuf::from("/work/shared/anchors"),
        ]);
    for dir in candidates {
        let client = dir.join("ch-remote");
        if client.is_file() {
            return client;
        }
    }
    panic!("ch-remote not found: set KVMKIT_ANCHORS to the anchors' directory");
}

/// A runner serving a spinning guest's API at a socket of its own.
struct Vmm {
    child: Child,
    socket: PathBuf,
}

impl Drop for Vmm {
    /// A test that fails midway leaves no VMM behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Vmm {
    fn start(name: &str) -> Self {
        Self::start_with(name, runner(), &[])
    }

    /// The spinning guest's VMM as `command` starts it (the runner, or a program that
    /// runs it, such as `unshare`), with the options `extra` too; once its VM runs.
    fn start_with(name: &str, mut command: Command, extra: &[&str]) -> Self {
        let dir = scratch(name);
        let kernel = bzimage(&dir, SPIN);
        let socket = dir.join("api.sock");
        let _ = std::fs::remove_file(&socket);
        let child = command
            .arg("--kernel")
            .arg(&kernel)
            .args([
                "--memory",
                "size=64M",
                "--serial",
                "null",
                "--console",
                "off",
            ])
            .args(extra)
            .arg("--api-socket")
            .arg(format!("path={}", socket.display()))
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let vmm = Vmm::answering(child, socket);
        // The API answers from the start; the command line's VM runs a moment later.
        let deadline = Instant::now() + Duration::from_secs(20);
        while vmm.state() != "Running" {
            assert!(Instant::now() < deadline, "the VM never ran");
            std::thread::sleep(Duration::from_millis(10));
        }
        vmm
    }

    /// The VMM `child` is, once its API socket appears.
    fn answering(child: Child, socket: PathBuf) -> Self {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "the API socket never appeared");
            std::thread::sleep(Duration::from_millis(10));
        }
        Vmm { child, socket }
    }

    /// `ch-remote --api-socket SOCKET args...`.
    fn ch_remote(&self, args: &[&str]) -> Output {
        Command::new(ch_remote())
            .arg("--api-socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    /// `curl --unix-socket SOCKET -X method .../api/v1/endpoint [-d body]`: (status,
    /// body).
    fn curl(&self, method: &str, endpoint: &str, body: Option<&str>) -> (u16, String) {
        let mut command = Command::new("curl");
        command
            .args(["-s", "-o", "-", "-w", "\n%{http_code}", "--unix-socket"])
            .arg(&self.socket)
            .args(["-X", method]);
        if let Some(body) = body {
            command.args(["-H", "Content-Type: application/json", "-d", body]);
        }
        let output = command
            .arg(format!("http://localhost/api/v1/{endpoint}"))
            .output()
            .expect("curl runs (scripts/prepare-host.sh installs it)");
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        (status.trim().parse().unwrap_or(0), body.to_string())
    }

    fn state(&self) -> String {
        let info = self.ch_remote(&["info"]);
        let info: serde_json::Value = serde_json::from_slice(&info.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&info.stderr)));
        info["state"].as_str().unwrap_or_default().to_string()
    }

    /// Waits for the runner's end: its status and what it said.
    fn end(mut self) -> (Option<i32>, String) {
        let status = wait_at_most(&mut self.child, 20);
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut self.child.stderr.take().unwrap(), &mut stderr).unwrap();
        (status, stderr)
    }
}

#[test]
fn ch_remote_pings_pauses_resumes_counts_and_shuts_the_vm_and_the_vmm_down() {
    let vmm = Vmm::start("ch-remote");

    let ping = vmm.ch_remote(&["ping"]);
    let running = vmm.state();
    let pause = vmm.ch_remote(&["pause"]);
    let paused = vmm.state();
    let pause_again = vmm.ch_remote(&["pause"]);
    let resume = vmm.ch_remote(&["resume"]);
    let resumed = vmm.state();
    let counters = vmm.ch_remote(&["counters"]);
    let power_button = vmm.ch_remote(&["power-button"]);
    let reboot = vmm.ch_remote(&["reboot"]);
    let rebooted = vmm.state();
    let shutdown = vmm.ch_remote(&["shutdown"]);
    let after_shutdown = vmm.state();
    let power_button_after = vmm.ch_remote(&["power-button"]);
    let delete = vmm.ch_remote(&["delete"]);
    let info_after_delete = vmm.ch_remote(&["info"]);
    let shutdown_vmm = vmm.ch_remote(&["shutdown-vmm"]);
    let socket = vmm.socket.clone();
    let (status, stderr) = vmm.end();

    let ping: serde_json::Value = serde_json::from_slice(&ping.stdout).unwrap();
    assert_eq!(ping["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(running, "Running");
    assert!(pause.status.success(), "{pause:?}");
    assert_eq!(paused, "Paused");
    assert!(!pause_again.status.success());
    assert!(
        String::from_utf8_lossy(&pause_again.stderr).contains("already paused"),
        "{pause_again:?}"
    );
    assert!(resume.status.success(), "{resume:?}");
    assert_eq!(resumed, "Running");
    let counters: serde_json::Value = serde_json::from_slice(&counters.stdout).unwrap();
    assert!(counters["_rng"]["queue0_requests"].is_u64(), "{counters}");
    // Answered (this guest has no ACPI; the sandbox's Linux powers off on it).
    assert!(power_button.status.success(), "{power_button:?}");
    // Booted again in place (the facade's tests and the sandbox's Linux show what a
    // reboot does).
    assert!(reboot.status.success(), "{reboot:?}");
    assert_eq!(rebooted, "Running");
    assert!(shutdown.status.success(), "{shutdown:?}");
    assert!(
        String::from_utf8_lossy(&power_button_after.stderr).contains("not running"),
        "{power_button_after:?}"
    );
    assert_eq!(after_shutdown, "Shutdown");
    assert!(delete.status.success(), "{delete:?}");
    assert!(
        String::from_utf8_lossy(&info_after_delete.stderr).contains("VM is not created"),
        "{info_after_delete:?}"
    );
    assert!(shutdown_vmm.status.success(), "{shutdown_vmm:?}");
    assert_eq!(status, Some(0), "{stderr}");
    assert!(!socket.exists(), "the socket outlived the VMM");
}

#[test]
fn bad_requests_get_cloud_hypervisors_answers_and_leave_the_vm_running() {
    let vmm = Vmm::start("curl");

    let unknown = vmm.curl("PUT", "vm.resize", Some("{}"));
    let wrong_method = vmm.curl("GET", "vm.pause", None);
    let malformed = vmm.curl("PUT", "vm.create", Some("{bad json"));
    let created = vmm.curl("PUT", "vm.create", Some(r#"{"payload":{"kernel":"/x"}}"#));
    let resume_running = vmm.curl("PUT", "vm.resume", None);
    let snapshot = vmm.curl(
        "PUT",
        "vm.snapshot",
        Some(r#"{"destination_url":"file:///nonexistent"}"#),
    );
    let ping = vmm.curl("GET", "vmm.ping", None);
    let state = vmm.state();
    let shutdown = vmm.curl("PUT", "vmm.shutdown", None);
    let (status, stderr) = vmm.end();

    assert_eq!(unknown, (404, r#"["Not Found"]"#.into()));
    assert_eq!(wrong_method, (400, r#"["Bad Request"]"#.into()));
    assert_eq!(malformed.0, 400);
    assert!(
        malformed.1.starts_with(r#"["Failed to deserialize JSON","#),
        "{malformed:?}"
    );
    assert_eq!(
        created,
        (
            500,
            r#"["Error from API","The VM could not be created","VM is already created"]"#.into()
        )
    );
    assert_eq!(resume_running.0, 500);
    assert!(
        resume_running.1.contains("not paused"),
        "{resume_running:?}"
    );
    assert_eq!(snapshot.0, 500);
    assert!(snapshot.1.contains("not paused"), "{snapshot:?}");
    assert_eq!(ping.0, 200);
    assert_eq!(state, "Running", "a bad request harmed the VM");
    assert_eq!(shutdown.0, 200);
    assert_eq!(status, Some(0), "{stderr}");
}

#[test]
fn a_socket_another_vmm_serves_is_refused_naming_it() {
    let first = Vmm::start("in-use");
    let dir = scratch("in-use-second");
    let kernel = bzimage(&dir, POWER_OFF);

    let second = runner()
        .arg("--kernel")
        .arg(&kernel)
        .args([
            "--memory",
            "size=64M",
            "--serial",
            "null",
            "--console",
            "off",
        ])
        .arg("--api-socket")
        .arg(&first.socket)
        .output()
        .unwrap();
    first.ch_remote(&["shutdown-vmm"]);
    let (status, _) = first.end();

    let stderr = said(&second);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--api-socket") && stderr.contains("another process serves"),
        "{stderr}"
    );
    assert_eq!(status, Some(0));
}

/// A runner with `--api-socket` alone, waiting for `vm.create` (Kata's way).
fn waiting(name: &str) -> (Vmm, PathBuf) {
    let dir = scratch(name);
    let socket = dir.join("api.sock");
    let _ = std::fs::remove_file(&socket);
    let child = runner()
        .arg("--api-socket")
        .arg(&socket)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (Vmm::answering(child, socket), dir)
}

#[test]
fn a_vmm_started_with_the_api_socket_alone_creates_and_boots_the_vm_it_is_sent() {
    let (vmm, dir) = waiting("create");
    let kernel = bzimage(&dir, SPIN);
    let config = dir.join("vm.json");
    let vm_config = serde_json::json!({
        "payload": {"kernel": kernel, "cmdline": "console=ttyS0"},
        "cpus": {"boot_vcpus": 1, "max_vcpus": 1},
        "memory": {"size": 64 << 20, "thp": true},
        "serial": {"mode": "Null"},
        "console": {"mode": "Off"},
        "iommu": false,
    });
    std::fs::write(&config, vm_config.to_string()).unwrap();
    let unsupported = dir.join("unsupported.json");
    let mut with_fs = vm_config.clone();
    with_fs["fs"] = serde_json::json!([{"tag": "myfs", "socket": "/tmp/virtiofs"}]);
    std::fs::write(&unsupported, with_fs.to_string()).unwrap();

    let info_before = vmm.ch_remote(&["info"]);
    let refused = vmm.curl("PUT", "vm.create", Some(&with_fs.to_string()));
    let create = vmm.ch_remote(&["create", config.to_str().unwrap()]);
    let created = vmm.state();
    let create_again = vmm.curl("PUT", "vm.create", Some(&vm_config.to_string()));
    let boot = vmm.ch_remote(&["boot"]);
    let booted = vmm.state();
    let shutdown = vmm.ch_remote(&["shutdown"]);
    let delete = vmm.ch_remote(&["delete"]);
    let create_after_a_run = vmm.curl("PUT", "vm.create", Some(&vm_config.to_string()));
    let shutdown_vmm = vmm.ch_remote(&["shutdown-vmm"]);
    let (status, stderr) = vmm.end();

    assert!(
        String::from_utf8_lossy(&info_before.stderr).contains("VM is not created"),
        "{info_before:?}"
    );
    assert_eq!(refused.0, 400, "{refused:?}");
    assert!(
        refused.1.contains("`fs`") && refused.1.contains("does not support"),
        "{refused:?}"
    );
    assert!(create.status.success(), "{create:?}");
    assert_eq!(created, "Created");
    assert!(
        create_again.1.contains("VM is already created"),
        "{create_again:?}"
    );
    assert!(boot.status.success(), "{boot:?} {stderr}");
    assert_eq!(booted, "Running");
    assert!(shutdown.status.success(), "{shutdown:?}");
    assert!(delete.status.success(), "{delete:?}");
    assert!(
        create_after_a_run.1.contains("one VM per process"),
        "{create_after_a_run:?}"
    );
    assert!(shutdown_vmm.status.success(), "{shutdown_vmm:?}");
    assert_eq!(status, Some(0), "{stderr}");
}

#[test]
fn a_vm_that_cannot_boot_says_why_and_stays_created_for_another_try() {
    let (vmm, dir) = waiting("bad-boot");
    let missing = serde_json::json!({
        "payload": {"kernel": dir.join("no-such-kernel")},
        "memory": {"size": 64 << 20},
        "console": {"mode": "Off"},
    });

    let create = vmm.curl("PUT", "vm.create", Some(&missing.to_string()));
    let boot = vmm.curl("PUT", "vm.boot", None);
    let state = vmm.state();
    let ping = vmm.curl("GET", "vmm.ping", None);
    vmm.ch_remote(&["shutdown-vmm"]);
    let (status, stderr) = vmm.end();

    assert_eq!(create.0, 204, "{create:?}");
    assert_eq!(boot.0, 500);
    assert!(
        boot.1.contains("The VM could not boot") && boot.1.contains("is not a file"),
        "{boot:?}"
    );
    assert_eq!(state, "Created");
    assert_eq!(ping.0, 200);
    assert_eq!(status, Some(0), "{stderr}");
}

/// Counts in ecx and prints the next byte of a count in bl on COM1 every 2^14 steps
/// (a few a second here): `loop: inc ecx; test ecx, 0x3fff; jnz loop; inc bl; mov al,
/// bl; mov dx, 0x3f8; out dx, al; jmp loop`.
const TICKER: &[u8] = &[
    0xff, 0xc1, 0xf7, 0xc1, 0xff, 0x3f, 0x00, 0x00, 0x75, 0xf6, 0xfe, 0xc3, 0x88, 0xd8, 0x66, 0xba,
    0xf8, 0x03, 0xee, 0xeb, 0xeb,
];

/// Waits until `path` holds at least `count` bytes; its bytes.
fn wait_for_bytes(path: &Path, count: usize) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let bytes = std::fs::read(path).unwrap_or_default();
        if bytes.len() >= count {
            return bytes;
        }
        assert!(
            Instant::now() < deadline,
            "{} never got {count} bytes",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_snapshot_taken_through_the_api_restores_in_a_new_vmm_and_goes_on_where_it_paused() {
    let dir = scratch("snapshot-api");
    let kernel = bzimage(&dir, TICKER);
    let serial = dir.join("serial.log");
    let snapshot = dir.join("snapshot");
    std::fs::create_dir_all(&snapshot).unwrap();
    let socket = dir.join("saved.sock");
    let _ = std::fs::remove_file(&socket);
    let child = runner()
        .arg("--kernel")
        .arg(&kernel)
        .args(["--memory", "size=64M", "--console", "off"])
        .arg("--serial")
        .arg(format!("file={}", serial.display()))
        .arg("--api-socket")
        .arg(&socket)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let saved = Vmm { child, socket };
    wait_for_bytes(&serial, 3);

    let while_running = saved.ch_remote(&["snapshot", &format!("file://{}", snapshot.display())]);
    saved.ch_remote(&["pause"]);
    let printed = std::fs::read(&serial).unwrap();
    let no_dir = saved.curl(
        "PUT",
        "vm.snapshot",
        Some(r#"{"destination_url":"file:///nonexistent/dir"}"#),
    );
    let taken = saved.ch_remote(&["snapshot", &format!("file://{}", snapshot.display())]);
    saved.ch_remote(&["shutdown-vmm"]);
    saved.end();
    let (restored, _) = waiting("snapshot-restore");
    let restore = restored.ch_remote(&[
        "restore",
        &format!("source_url=file://{}", snapshot.display()),
    ]);
    let state_restored = restored.state();
    let resume = restored.ch_remote(&["resume"]);
    let after = wait_for_bytes(&serial, 2);
    restored.ch_remote(&["shutdown-vmm"]);
    let (status, stderr) = restored.end();

    assert!(
        !while_running.status.success(),
        "a running VM was snapshotted"
    );
    assert!(
        String::from_utf8_lossy(&while_running.stderr).contains("not paused"),
        "{while_running:?}"
    );
    assert_eq!(no_dir.0, 500);
    assert!(no_dir.1.contains("not an existing directory"), "{no_dir:?}");
    assert!(taken.status.success(), "{taken:?}");
    assert!(restore.status.success(), "{restore:?} {stderr}");
    assert_eq!(
        state_restored, "Paused",
        "a restored VM waits for its resume"
    );
    assert!(resume.status.success(), "{resume:?}");
    let last = *printed.last().unwrap();
    // The guest counts in bl then prints it: paused between the two, the next byte
    // printed is the one already counted.
    assert!(
        after[0] == last.wrapping_add(1) || after[0] == last.wrapping_add(2),
        "printed {printed:?} before the snapshot, {after:?} after the restore"
    );
    assert_eq!(status, Some(0), "{stderr}");
}

#[test]
fn a_corrupted_snapshot_is_refused_by_the_api_and_the_command_line_and_runs_nothing() {
    let dir = scratch("snapshot-corrupt");
    let snapshot = dir.join("snapshot");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::write(
        snapshot.join("state.json"),
        "kvmkit-snapshot 1 0123456789abcdef\n{\"vcpus\": []}",
    )
    .unwrap();
    let (vmm, _) = waiting("snapshot-corrupt-api");

    let restore = vmm.curl(
        "PUT",
        "vm.restore",
        Some(&format!(
            r#"{{"source_url":"file://{}"}}"#,
            snapshot.display()
        )),
    );
    let info = vmm.curl("GET", "vm.info", None);
    vmm.ch_remote(&["shutdown-vmm"]);
    vmm.end();
    let command_line = runner()
        .arg("--restore")
        .arg(format!("source_url=file://{}", snapshot.display()))
        .output()
        .unwrap();

    assert_eq!(restore.0, 500, "{restore:?}");
    assert!(restore.1.contains("checksum"), "{restore:?}");
    assert_eq!(
        info.0, 404,
        "a VM was left after a refused restore: {info:?}"
    );
    let stderr = said(&command_line);
    assert_eq!(command_line.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--restore") && stderr.contains("checksum"),
        "{stderr}"
    );
}

#[test]
fn a_mac_drawn_for_a_net_device_is_the_one_its_snapshot_keeps() {
    // In a network namespace of its own, the runner makes its tap (root).
    let mut unshare = Command::new("unshare");
    unshare.arg("-n").arg(env!("CARGO_BIN_EXE_kvmkit"));
    let vmm = Vmm::start_with("drawn-mac", unshare, &["--net", "tap="]);
    let snapshot = scratch("drawn-mac").join("snapshot");
    std::fs::create_dir_all(&snapshot).unwrap();

    let (_, info) = vmm.curl("GET", "vm.info", None);
    vmm.ch_remote(&["pause"]);
    let taken = vmm.ch_remote(&["snapshot", &format!("file://{}", snapshot.display())]);
    vmm.ch_remote(&["shutdown-vmm"]);
    vmm.end();

    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    let mac = info["config"]["net"][0]["mac"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let state = std::fs::read_to_string(snapshot.join("state.json")).unwrap();
    assert!(taken.status.success(), "{taken:?}");
    assert_eq!(mac.len(), 17, "no MAC in {info}");
    assert!(state.contains(&mac), "the snapshot does not keep {mac}");
}
