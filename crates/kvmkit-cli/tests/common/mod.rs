// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What the runner's end-to-end tests share: tiny bzImages whose 64-bit entry point
//! is a few instructions, and ways to run the binary and read what it said.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `mov dx, 0x3f8; mov al, 'K'; out dx, al`: a byte on COM1.
pub const PRINT_K: &[u8] = &[0x66, 0xba, 0xf8, 0x03, 0xb0, b'K', 0xee];
/// `mov dx, 0x600; mov al, 0x34; out dx, al; hlt`: ACPI S5 with SLP_EN, power-off.
pub const POWER_OFF: &[u8] = &[0x66, 0xba, 0x00, 0x06, 0xb0, 0x34, 0xee, 0xf4];
/// `ud2` with no IDT: a triple fault.
pub const TRIPLE_FAULT: &[u8] = &[0x0f, 0x0b];
/// `jmp $`.
pub const SPIN: &[u8] = &[0xeb, 0xfe];
/// Waits for a byte on COM1 (its line status register's data-ready bit), reads it and
/// writes it back: `wait: mov dx, 0x3fd; in al, dx; test al, 1; jz wait; mov dx,
/// 0x3f8; in al, dx; out dx, al`.
pub const ECHO_ONE: &[u8] = &[
    0x66, 0xba, 0xfd, 0x03, 0xec, 0xa8, 0x01, 0x74, 0xf7, 0x66, 0xba, 0xf8, 0x03, 0xec, 0xee,
];
/// `mov dx, 0x505; mov al, 1; out dx, al; hlt`: "panicked" on pvpanic, as Linux's
/// driver writes it.
pub const PVPANIC: &[u8] = &[0x66, 0xba, 0x05, 0x05, 0xb0, 0x01, 0xee, 0xf4];
/// `mov dx, 0xcf9; mov al, 6; out dx, al; hlt`: a reset through the reset control
/// register, as Linux's `reboot=p`.
pub const RESET_CF9: &[u8] = &[0x66, 0xba, 0xf9, 0x0c, 0xb0, 0x06, 0xee, 0xf4];
/// `mov eax, 0xc0000000; mov byte [rax], 123`: "boot complete" on Firecracker's boot
/// timer, as its guest tooling writes it.
pub const BOOT_COMPLETE: &[u8] = &[0xb8, 0x00, 0x00, 0x00, 0xc0, 0xc6, 0x00, 0x7b];

pub fn runner() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kvmkit"));
    command.stdin(Stdio::null());
    command
}

/// What the runner said on stderr, without the line every run on a host without VT-x
/// or AMD-V starts with (this one, KVM on PVM).
pub fn said(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|line| !line.starts_with("kvmkit: this host has no VT-x or AMD-V"))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// Waits for `child` at most `seconds`; kills it if it is still running then.
pub fn wait_at_most(child: &mut std::process::Child, seconds: u64) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvmkit-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A bzImage (boot protocol 2.15, 64-bit entry) whose entry point runs `code`.
pub fn bzimage(dir: &Path, code: &[u8]) -> PathBuf {
    let mut image = vec![0u8; 1024 + 0x200 + code.len()];
    let mut put =
        |offset: usize, bytes: &[u8]| image[offset..offset + bytes.len()].copy_from_slice(bytes);
    put(0x1f1, &[1]); // setup_sects
    put(0x1fe, &0xaa55u16.to_le_bytes());
    put(0x202, b"HdrS");
    put(0x206, &0x020fu16.to_le_bytes());
    put(0x211, &[1]); // LOADED_HIGH
    put(0x214, &0x10_0000u32.to_le_bytes());
    put(0x236, &1u16.to_le_bytes()); // XLF_KERNEL_64
    put(0x238, &2047u32.to_le_bytes());
    put(0x260, &(1u32 << 20).to_le_bytes()); // init_size
    put(1024 + 0x200, code);
    let path = dir.join("bzImage");
    std::fs::write(&path, image).unwrap();
    path
}
