// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The `kvmkit` binary end to end on this host's KVM, with tiny bzImages whose 64-bit
//! entry point is a few instructions (a Linux kernel needs hardware-assisted KVM: the
//! sandbox tier, `tests/sandbox/run.sh`, boots one). Checks the exit statuses, the
//! one-line reasons and that bad options name themselves.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Runs the binary on `kernel` with 2 vCPUs, 64 MiB (unless `args` say) and COM1 in
/// `serial`.
fn run(args: &[&str], kernel: &Path, serial: &Path) -> Output {
    let memory: &[&str] = if args.contains(&"--memory") {
        &[]
    } else {
        &["--memory", "size=64M"]
    };
    runner()
        .arg("--kernel")
        .arg(kernel)
        .args(memory)
        .args(["--cpus", "boot=2"])
        .arg("--serial")
        .arg(format!("file={}", serial.display()))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_guest_that_powers_off_ends_the_runner_with_status_0_and_its_output_in_the_file() {
    let dir = scratch("poweroff");
    let kernel = bzimage(&dir, &[PRINT_K, POWER_OFF].concat());
    let serial = dir.join("serial.log");

    let output = run(&["--stats"], &kernel, &serial);

    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(std::fs::read(&serial).unwrap(), b"K");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("vcpu0 exits total="), "{stderr}");
    assert!(stderr.contains("memory resident_kib="), "{stderr}");
    assert!(stderr.contains(" vmm_overhead_kib="), "{stderr}");
}

/// The `--stats` timeline's milestones, in the order printed, each with its seconds.
fn timeline(stderr: &str) -> Vec<(String, f64)> {
    let line = stderr
        .lines()
        .find_map(|line| line.trim().strip_prefix("timeline "))
        .unwrap_or_else(|| panic!("no timeline in {stderr}"));
    line.split_whitespace()
        .map(|entry| {
            let (name, at) = entry.split_once("=+").unwrap();
            let seconds = at.strip_suffix('s').unwrap().parse().unwrap();
            (name.to_string(), seconds)
        })
        .collect()
}

#[test]
fn the_stats_timeline_runs_from_the_options_to_the_guests_boot_complete_in_order() {
    // Arrange: a guest that prints, says its boot is complete on the boot timer (as
    // Firecracker's guest tooling does) and powers off.
    let dir = scratch("timeline");
    let kernel = bzimage(&dir, &[PRINT_K, BOOT_COMPLETE, POWER_OFF].concat());
    let serial = dir.join("serial.log");

    // Act
    let output = run(&["--stats"], &kernel, &serial);

    // Assert
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let names: Vec<String> = timeline(&stderr).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "options-parsed",
            "memory-mapped",
            "kernel-loaded",
            "first-kvm-run",
            "first-console-byte",
            "guest-boot-complete"
        ],
        "{stderr}"
    );
    let times: Vec<f64> = timeline(&stderr).into_iter().map(|(_, t)| t).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{stderr}");
}

#[test]
fn a_triple_fault_ends_as_a_reboot_as_linux_reboot_t_asks_with_a_line_saying_so() {
    let dir = scratch("triple");
    let kernel = bzimage(&dir, TRIPLE_FAULT);

    let output = run(&[], &kernel, &dir.join("serial.log"));

    assert_eq!(output.status.code(), Some(0));
    let stderr = said(&output);
    assert!(
        stderr.contains("kvmkit: vCPU 0 triple-faulted at rip") && stderr.contains("reboot"),
        "{stderr}"
    );
}

#[test]
fn sigterm_stops_a_spinning_guest_in_order_with_status_143() {
    let dir = scratch("sigterm");
    let kernel = bzimage(&dir, SPIN);
    let mut child = runner()
        .arg("--kernel")
        .arg(&kernel)
        .args(["--memory", "size=64M", "--serial", "null"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // Every thread of the running VMM is confined (seccomp mode 2: a filter), the
    // default being --seccomp true.
    let modes: Vec<(String, String)> = std::fs::read_dir(format!("/proc/{}/task", child.id()))
        .unwrap()
        .filter_map(|task| {
            let status = std::fs::read_to_string(task.ok()?.path().join("status")).ok()?;
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix(name))
                    .map(|value| value.trim().to_string())
            };
            Some((field("Name:")?, field("Seccomp:")?))
        })
        .collect();

    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the runner did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };

    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    assert!(modes.iter().any(|(name, _)| name == "vcpu0"), "{modes:?}");
    assert!(
        modes
            .iter()
            .filter(|(name, _)| !name.starts_with("kvm-"))
            .all(|(_, mode)| mode == "2"),
        "a thread runs unconfined: {modes:?}"
    );
}

#[test]
fn bad_options_and_images_are_refused_naming_the_option() {
    let dir = scratch("bad");
    let kernel = bzimage(&dir, POWER_OFF);
    let not_a_kernel = dir.join("notes.txt");
    std::fs::write(&not_a_kernel, "not a kernel at all, just some text").unwrap();
    let serial = dir.join("serial.log");
    let image = dir.join("disk.img");
    std::fs::write(&image, vec![0u8; 4096]).unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--kernel".into(), "/nonexistent/vmlinuz".into()],
            "--kernel: \"/nonexistent/vmlinuz\" is not a file",
        ),
        (
            vec!["--kernel".into(), not_a_kernel.display().to_string()],
            "--kernel: not a kernel image",
        ),
        (
            vec![
                "--kernel".into(),
                kernel.display().to_string(),
                "--initramfs".into(),
                "/nonexistent/initrd".into(),
            ],
            "--initramfs: cannot read the initrd \"/nonexistent/initrd\"",
        ),
        (
            vec![
                "--kernel".into(),
                kernel.display().to_string(),
                "--cmdline".into(),
                "x".repeat(3000),
            ],
            "--cmdline: the kernel command line is 3000 bytes",
        ),
        (
            vec![
                "--kernel".into(),
                kernel.display().to_string(),
                "--disk".into(),
                "path=/nonexistent/disk.img".into(),
            ],
            "--disk: cannot open the disk image \"/nonexistent/disk.img\"",
        ),
        (
            vec![
                "--kernel".into(),
                kernel.display().to_string(),
                "--memory".into(),
                "size=64M,hugepage_size=3M,hugepages=on".into(),
            ],
            "--memory:",
        ),
        (
            vec![
                "--kernel".into(),
                kernel.display().to_string(),
                "--disk".into(),
                format!("path={}", image.display()),
                "--disk".into(),
                format!("path={}", image.display()),
            ],
            "is in use",
        ),
        (
            vec!["--kernel".into(), "/tmp/a\u{1b}[2Jb".into()],
            "--kernel: \"/tmp/a\\u{1b}[2Jb\" is not a file",
        ),
        (
            vec![
                "--kernel".into(),
                kernel.display().to_string(),
                "--memory".into(),
                "size=1M".into(),
            ],
            "--memory: invalid address map: guest RAM below 4 GiB (0x100000 bytes) must reach past 1 MiB",
        ),
        // Sizes the host cannot back: refused before anything is mapped, never an
        // allocation failure that aborts the process.
        (
            vec![
                "--kernel".into(),
                kernel.display().to_string(),
                "--memory".into(),
                "size=99999999G".into(),
            ],
            "--memory: 0x17d783fc0000000 bytes of guest memory is more than kvmkit maps",
        ),
        (
            vec![
                "--kernel".into(),
                kernel.display().to_string(),
                "--memory".into(),
                "size=64T".into(),
            ],
            "--memory: a guest memory region of 0x3fff40000000 bytes is more than KVM maps",
        ),
        (
            vec![
                "--kernel".into(),
                kernel.display().to_string(),
                "--memory".into(),
                "size=4T,prefault=on".into(),
            ],
            "--memory: prefault=on needs 0x40000000000 bytes of memory now",
        ),
    ];

    for (args, expected) in cases {
        let output = runner()
            .args(&args)
            .arg("--serial")
            .arg(format!("file={}", serial.display()))
            .output()
            .unwrap();

        let stderr = said(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{args:?}: {stderr:?} should contain {expected:?}"
        );
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    }
}

#[test]
fn malformed_option_values_are_usage_errors() {
    for args in [
        ["--cpus", "boot=0"],
        ["--memory", "size=lots"],
        ["--net", "mac=00:11"],
    ] {
        let output = runner()
            .args(["--kernel", "/dev/null"])
            .args(args)
            .output()
            .unwrap();

        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(args[0]), "{args:?}: {stderr}");
    }
}

#[test]
fn stats_prove_what_the_memory_options_did() {
    let dir = scratch("stats");
    let kernel = bzimage(&dir, POWER_OFF);
    let serial = dir.join("serial.log");

    let huge = run(
        &[
            "--memory",
            "size=64M,hugepages=on,hugepage_size=2M",
            "--stats",
        ],
        &kernel,
        &serial,
    );
    let merged = run(
        &["--memory", "size=64M,mergeable=on", "--stats"],
        &kernel,
        &serial,
    );

    let huge = String::from_utf8_lossy(&huge.stderr).to_string();
    assert!(
        huge.contains("page_kib=2048"),
        "hugepages=on needs `scripts/prepare-host.sh`: {huge}"
    );
    let merged = String::from_utf8_lossy(&merged.stderr).to_string();
    assert!(
        merged
            .lines()
            .any(|line| line.contains("memory gpa=0x0") && line.contains("mg")),
        "mergeable=on is advised (smaps flag mg): {merged}"
    );
}

#[test]
fn a_hugepage_pool_too_small_is_named_with_its_fix() {
    let dir = scratch("pool");
    let kernel = bzimage(&dir, POWER_OFF);

    let output = runner()
        .arg("--kernel")
        .arg(&kernel)
        .args(["--memory", "size=512G,hugepages=on", "--serial", "null"])
        .output()
        .unwrap();

    let stderr = said(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let error = stderr.lines().last().unwrap_or_default();
    assert!(error.starts_with("kvmkit: --memory: "), "{stderr}");
    assert!(stderr.contains("nr_hugepages"), "the fix: {stderr}");
}

#[test]
fn input_goes_to_the_console_whose_output_is_the_terminal() {
    let dir = scratch("input");
    let kernel = bzimage(&dir, &[ECHO_ONE, POWER_OFF].concat());
    let mut child = runner()
        .arg("--kernel")
        .arg(&kernel)
        .args([
            "--memory",
            "size=64M",
            "--serial",
            "tty",
            "--console",
            "null",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"Q").unwrap();
    let status = wait_at_most(&mut child, 20);
    let mut stdout = Vec::new();
    std::io::Read::read_to_end(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();

    assert_eq!(
        status,
        Some(0),
        "the byte typed never reached ttyS0 (the virtio console took it)"
    );
    assert_eq!(stdout, b"Q");
}

#[test]
fn two_consoles_on_the_terminal_are_refused() {
    let dir = scratch("two-tty");
    let kernel = bzimage(&dir, POWER_OFF);

    let output = runner()
        .arg("--kernel")
        .arg(&kernel)
        .args(["--serial", "tty", "--console", "tty"])
        .output()
        .unwrap();

    let stderr = said(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--serial") && stderr.contains("cannot share the terminal"),
        "{stderr}"
    );
}

#[test]
fn a_guest_panic_reported_on_pvpanic_ends_the_runner_with_status_3_and_a_line() {
    let dir = scratch("pvpanic");
    let kernel = bzimage(&dir, PVPANIC);
    let mut child = runner()
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
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let status = wait_at_most(&mut child, 20);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();

    assert_eq!(status, Some(3), "{stderr}");
    assert!(stderr.contains("the guest panicked"), "{stderr}");
}

#[test]
fn a_reset_through_port_0xcf9_ends_as_a_reboot() {
    let dir = scratch("cf9");
    let kernel = bzimage(&dir, RESET_CF9);
    let mut child = runner()
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
        .spawn()
        .unwrap();

    let status = wait_at_most(&mut child, 20);

    assert_eq!(status, Some(0), "the guest was left halted after its reset");
}

#[test]
fn stats_are_printed_when_the_run_fails_too() {
    let dir = scratch("stats-error");
    let kernel = bzimage(&dir, POWER_OFF);

    let output = run(
        &["--stats", "--disk", "path=/nonexistent/disk.img"],
        &kernel,
        &dir.join("serial.log"),
    );

    let stderr = said(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("kvmkit: --disk: "), "{stderr}");
    assert!(stderr.contains("kvmkit stats"), "{stderr}");
    assert!(stderr.contains("vcpu0 exits total=0"), "{stderr}");
    assert!(stderr.contains("the VM did not run"), "{stderr}");
}

#[test]
fn a_host_without_vt_x_or_amd_v_is_named_at_start() {
    let dir = scratch("pvm");
    let kernel = bzimage(&dir, POWER_OFF);
    let hardware = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap()
        .lines()
        .filter(|line| line.starts_with("flags"))
        .any(|line| line.split_whitespace().any(|f| f == "vmx" || f == "svm"));

    let output = run(&[], &kernel, &dir.join("serial.log"));

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.contains("this host has no VT-x or AMD-V"),
        !hardware,
        "{stderr}"
    );
}

/// The runner on a pseudo-terminal that is its controlling terminal, as in an
/// interactive shell (so a Ctrl-C left to the terminal would signal it): the
/// pty's controller side and the child.
fn on_terminal(kernel: &Path) -> (std::fs::File, std::process::Child) {
    use std::os::fd::FromRawFd;
    use std::os::unix::process::CommandExt;
    let (mut controller, mut terminal) = (0, 0);
    // SAFETY: openpty writes two descriptors to the out-pointers; the name, termios
    // and window-size arguments may be null.
    let ret = unsafe {
        libc::openpty(
            &mut controller,
            &mut terminal,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(ret, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned here alone.
    let (controller, terminal) = unsafe {
        (
            std::fs::File::from_raw_fd(controller),
            std::fs::File::from_raw_fd(terminal),
        )
    };
    let mut command = runner();
    command
        .arg("--kernel")
        .arg(kernel)
        .args([
            "--memory",
            "size=64M",
            "--serial",
            "tty",
            "--console",
            "off",
        ])
        .stdin(terminal.try_clone().unwrap())
        .stdout(terminal.try_clone().unwrap())
        .stderr(Stdio::null());
    // SAFETY: setsid and ioctl are async-signal-safe; the child makes the pty on its
    // stdin its controlling terminal, as a login shell's children have one.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().unwrap();
    drop(terminal);
    (controller, child)
}

/// Reads from the pty until `byte` arrives (the guest is running, the terminal raw).
fn read_until(controller: &mut std::fs::File, byte: u8) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 64];
    while !seen.contains(&byte) {
        let n = std::io::Read::read(controller, &mut buffer).unwrap();
        assert!(n > 0, "the runner closed the terminal: {seen:?}");
        seen.extend_from_slice(&buffer[..n]);
    }
    seen
}

#[test]
fn ctrl_c_typed_on_the_terminal_reaches_the_guest_instead_of_ending_the_vm() {
    let dir = scratch("ctrl-c");
    let kernel = bzimage(&dir, &[PRINT_K, ECHO_ONE, POWER_OFF].concat());
    let (mut controller, mut child) = on_terminal(&kernel);

    read_until(&mut controller, b'K');
    std::io::Write::write_all(&mut controller, &[0x03]).unwrap();
    let echoed = read_until(&mut controller, 0x03);
    let status = wait_at_most(&mut child, 20);

    assert_eq!(
        status,
        Some(0),
        "Ctrl-C ended the VM instead of reaching it"
    );
    assert_eq!(echoed, [0x03]);
}

#[test]
fn ctrl_a_x_typed_on_the_terminal_ends_the_vm_as_sigint_does() {
    let dir = scratch("ctrl-a-x");
    let kernel = bzimage(&dir, &[PRINT_K, SPIN].concat());
    let (mut controller, mut child) = on_terminal(&kernel);

    read_until(&mut controller, b'K');
    std::io::Write::write_all(&mut controller, &[0x01, b'x']).unwrap();
    let status = wait_at_most(&mut child, 20);

    assert_eq!(status, Some(128 + libc::SIGINT));
}
