// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Each thread kind's seccomp filter refuses what its list lacks: the thread's call
//! never returns, the process names it on stderr and ends with status 159. Each case
//! runs in a child (this test binary again, told which filter to take), since the
//! violation ends the process.

use std::process::Command;

use kvmkit::seccomp::{self, SeccompPolicy, ThreadKind, SECCOMP_VIOLATION_STATUS};

const CHILD: &str = "KVMKIT_SECCOMP_CHILD";

/// In the child: confines this thread as `kind`, makes an allowed call (a write), then
/// one no kvmkit thread makes (socket(2)).
fn confined_child(kind: ThreadKind) -> ! {
    let program = seccomp::filter(kind, SeccompPolicy::Enforce)
        .unwrap()
        .unwrap();
    seccomp::apply(&program).unwrap();
    let line = b"allowed\n";
    // SAFETY: writes a buffer of its own length to stdout.
    unsafe { libc::write(libc::STDOUT_FILENO, line.as_ptr().cast(), line.len()) };
    // SAFETY: socket takes no pointers; the filter ends the process before it returns.
    unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    // SAFETY: only reached if the filter let the call through.
    unsafe { libc::_exit(0) }
}

fn run_child(test: &str, kind: &str) -> std::process::Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env(CHILD, kind)
        .output()
        .unwrap()
}

fn check(test: &str, kind: ThreadKind, name: &str) {
    if std::env::var(CHILD).as_deref() == Ok(name) {
        confined_child(kind);
    }

    let output = run_child(test, name);

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(SECCOMP_VIOLATION_STATUS),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("allowed"),
        "an allowed call was refused: {stderr}"
    );
    assert!(
        stderr.contains(&format!("forbidden system call {}", libc::SYS_socket)),
        "{stderr}"
    );
}

#[test]
fn the_vcpu_filter_ends_the_process_on_a_call_outside_its_list() {
    check(
        "the_vcpu_filter_ends_the_process_on_a_call_outside_its_list",
        ThreadKind::Vcpu,
        "vcpu",
    );
}

#[test]
fn the_io_thread_filter_ends_the_process_on_a_call_outside_its_list() {
    check(
        "the_io_thread_filter_ends_the_process_on_a_call_outside_its_list",
        ThreadKind::Io,
        "io",
    );
}

#[test]
fn the_api_thread_filter_ends_the_process_on_a_call_outside_its_list() {
    check(
        "the_api_thread_filter_ends_the_process_on_a_call_outside_its_list",
        ThreadKind::Api,
        "api",
    );
}

#[test]
fn log_builds_filters_and_off_builds_none() {
    for kind in [ThreadKind::Vcpu, ThreadKind::Io, ThreadKind::Api] {
        assert!(seccomp::filter(kind, SeccompPolicy::Log).unwrap().is_some());
        assert!(seccomp::filter(kind, SeccompPolicy::Off).unwrap().is_none());
    }
}
