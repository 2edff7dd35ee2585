// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A whole VMM process's lifecycle, run as the `serial_echo` example (which
//! `cargo test` builds): its threads while it runs, and an orderly end on the guest's
//! request and on SIGTERM, with nothing left running.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn example(name: &str) -> PathBuf {
    // Test binaries live in target/<profile>/deps; examples in target/<profile>/examples.
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds the examples, run the tests through it",
        path.display()
    );
    path
}

fn start_echo(vcpus: u32) -> Child {
    Command::new(example("serial_echo"))
        .args(["--vcpus", &vcpus.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads stdout until the guest printed its ready line.
fn wait_ready(child: &mut Child) -> BufReader<std::process::ChildStdout> {
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    stdout
}

/// The names of a process's threads, from /proc/PID/task/*/comm.
fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .map(|name| name.trim_end().to_string())
        .collect();
    names.sort();
    names
}

fn wait_with_timeout(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the VMM did not end within 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    text
}

#[test]
fn running_vm_has_one_io_thread_and_one_thread_per_vcpu() {
    let mut child = start_echo(3);
    let _stdout = wait_ready(&mut child);
    // vCPU 0 may print before the last vCPU thread has started.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !thread_names(child.id()).contains(&"vcpu2".to_string()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }

    let names = thread_names(child.id());
    child.kill().unwrap();
    child.wait().unwrap();

    // KVM itself may attach a kernel worker to the process (kvm-nx-lpage-recovery,
    // Linux 6.13+); it is the kernel's, not a VMM thread.
    let vmm_threads: Vec<&String> = names.iter().filter(|n| !n.starts_with("kvm-")).collect();
    assert_eq!(
        vmm_threads,
        vec!["serial_echo", "vcpu0", "vcpu1", "vcpu2"],
        "all threads: {names:?}"
    );
}

#[test]
fn guest_quit_ends_the_process_with_the_guests_code_and_no_threads_left() {
    let mut child = start_echo(2);
    let mut stdout = wait_ready(&mut child);

    child.stdin.as_mut().unwrap().write_all(b"hi q").unwrap();
    let status = wait_with_timeout(&mut child);
    let mut echoed = String::new();
    stdout.read_to_string(&mut echoed).unwrap();
    let stderr = stderr_of(&mut child);

    assert_eq!(echoed, "hi q");
    assert_eq!(status.code(), Some(0x71), "{stderr}");
    assert!(stderr.contains("DebugExit(113)"), "{stderr}");
    assert!(stderr.contains("threads left: 1"), "{stderr}");
}

#[test]
fn sigterm_stops_every_vcpu_and_exits_with_128_plus_the_signal() {
    let mut child = start_echo(2);
    let _stdout = wait_ready(&mut child);

    // SAFETY: sends SIGTERM to the child this test started and has not reaped.
    let sent = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_with_timeout(&mut child);
    let stderr = stderr_of(&mut child);

    assert_eq!(sent, 0);
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{stderr}");
    assert!(stderr.contains("Signal(15)"), "{stderr}");
    assert!(stderr.contains("threads left: 1"), "{stderr}");
}

#[test]
fn end_of_input_leaves_the_vm_running_until_it_is_told_to_stop() {
    let mut child = start_echo(1);
    let _stdout = wait_ready(&mut child);

    drop(child.stdin.take());
    std::thread::sleep(Duration::from_millis(200));
    let still_running = child.try_wait().unwrap().is_none();
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = wait_with_timeout(&mut child);

    assert!(still_running, "closing stdin must not end the VM");
    assert_eq!(status.code(), Some(128 + libc::SIGINT));
}
