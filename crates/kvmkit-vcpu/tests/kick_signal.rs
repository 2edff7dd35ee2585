// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The kick signal belongs to kvmkit: a handler someone else installed is not replaced
//! silently. (Its own test binary: it installs a process-wide signal handler.)

mod common;

use std::sync::Arc;

use common::{Recorder, TestVm, CODE_ADDR, STACK_TOP};
use kvmkit_guest_asm::{CpuMode, GuestProgram};
use kvmkit_vcpu::{kick_signal, Error, VcpuThread, VcpuThreadConfig};

extern "C" fn someone_elses_handler(_: libc::c_int) {}

#[test]
fn spawning_refuses_to_replace_a_foreign_kick_signal_handler() {
    // SAFETY: installs a handler that does nothing for the kick signal, which no
    // other code in this test binary uses.
    unsafe {
        libc::signal(
            kick_signal(),
            someone_elses_handler as *const () as libc::sighandler_t,
        )
    };
    let vm = TestVm::new(4);
    let program = GuestProgram::assemble(CpuMode::Long, CODE_ADDR, |a| a.hlt()).unwrap();
    vm.load(&program);
    let vcpu = vm.vcpu_at(0, &program, STACK_TOP);

    let error = VcpuThread::spawn(vcpu, Arc::new(Recorder::new()), VcpuThreadConfig::default())
        .unwrap_err();

    assert!(
        matches!(error, Error::KickSignalTaken { signal } if signal == kick_signal()),
        "{error}"
    );
}
