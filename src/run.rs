// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The I/O thread: a booted machine run on its platform until the VM ends, and the
//! one outcome that says how it ended.

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kvmkit_devices::{event_fd, Flow, LoopEnd, RawTerminal, ShutdownReason, TerminationSignals};
use kvmkit_vcpu::{EventFd, StartHook, SystemEventKind, VcpuExit, VcpuOutcome};

use crate::seccomp::{self, ThreadKind};
use crate::{BootedMachine, Error, Platform};

/// How a VM run on a [`Platform`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VmOutcome {
    /// The guest powered off (ACPI S5, or a KVM shutdown system event).
    PowerOff,
    /// The guest asked for a reset (i8042 or a KVM reset system event).
    Reboot,
    /// The guest wrote `code` to the debug exit port.
    DebugExit(u32),
    /// The VMM got this signal (SIGINT, SIGTERM).
    Signal(i32),
    /// The guest reported a crash (a KVM crash system event, such as Hyper-V's crash
    /// registers raise).
    GuestCrash {
        /// The vCPU that reported it.
        vcpu: u32,
    },
    /// The guest reported a panic on the pvpanic device (Linux's `pvpanic` driver
    /// does, before `panic=N` reboots it).
    GuestPanic,
    /// The user typed the terminal's escape, Ctrl-A x.
    Escape,
    /// The VMM's control plane ended the VM (Cloud Hypervisor's `vm.shutdown`).
    VmmRequest,
    /// A vCPU thread panicked: a bug in an I/O handler, a device or kvmkit. The other
    /// vCPUs were stopped.
    VcpuPanicked {
        /// The vCPU.
        vcpu: u32,
        /// The panic's message.
        message: String,
    },
    /// A vCPU triple-faulted: on a PC, a reset (Linux's `reboot=t` asks for one this
    /// way), and so a reboot as far as the exit status goes.
    TripleFault {
        /// The vCPU.
        vcpu: u32,
        /// Its instruction pointer.
        rip: u64,
    },
    /// A vCPU ended for another reason, e.g. `hlt` without an in-kernel APIC.
    VcpuExit {
        /// The vCPU.
        vcpu: u32,
        /// Its last exit.
        exit: VcpuExit,
    },
}

impl VmOutcome {
    /// The status a debug exit code outside 1..=255 gives (0 included): a code the
    /// process status cannot carry must not read as success or as another code's
    /// truncation.
    pub const DEBUG_EXIT_OUT_OF_RANGE: i32 = 255;
    /// The status of a guest's panic or crash report (2 is a usage error's, by the
    /// convention of command lines).
    pub const GUEST_CRASH: i32 = 3;
    /// The status of a vCPU thread's panic (Rust's own panic status).
    pub const VCPU_PANICKED: i32 = 101;

    /// A process exit status for this outcome:
    ///
    /// | outcome | status |
    /// |---|---|
    /// | power-off, reboot, triple fault (a reset), the VMM's request | 0 |
    /// | debug exit with code 1..=255 | the code |
    /// | debug exit with any other code | [`DEBUG_EXIT_OUT_OF_RANGE`](Self::DEBUG_EXIT_OUT_OF_RANGE) (255) |
    /// | signal | 128 + the signal number |
    /// | the terminal's escape | 128 + SIGINT (130), as Ctrl-C ending a program |
    /// | another vCPU exit | 1 |
    /// | guest panic (pvpanic) or crash report | [`GUEST_CRASH`](Self::GUEST_CRASH) (3) |
    /// | vCPU panic | [`VCPU_PANICKED`](Self::VCPU_PANICKED) (101) |
    pub fn exit_status(&self) -> i32 {
        match self {
            VmOutcome::PowerOff
            | VmOutcome::Reboot
            | VmOutcome::TripleFault { .. }
            | VmOutcome::VmmRequest => 0,
            VmOutcome::DebugExit(code @ 1..=255) => *code as i32,
            VmOutcome::DebugExit(_) => Self::DEBUG_EXIT_OUT_OF_RANGE,
            VmOutcome::Signal(signo) => 128 + signo,
            VmOutcome::Escape => 128 + libc::SIGINT,
            VmOutcome::VcpuExit { .. } => 1,
            VmOutcome::GuestCrash { .. } | VmOutcome::GuestPanic => Self::GUEST_CRASH,
            VmOutcome::VcpuPanicked { .. } => Self::VCPU_PANICKED,
        }
    }
}

impl BootedMachine {
    /// Runs the machine on `platform`: one thread per vCPU and the calling thread as
    /// the I/O thread, until a device, a signal or a vCPU ends the VM. Then every vCPU
    /// is stopped and joined and the terminal restored, and one outcome returned.
    pub fn run_on(self, platform: Platform) -> Result<VmOutcome, Error> {
        self.run_on_then(platform, |_| ())
            .map(|(outcome, ())| outcome)
    }

    /// As [`run_on`](Self::run_on), and calls `at_end` with the guest RAM once the
    /// vCPUs have stopped, before it is unmapped (to report what the kernel did with
    /// it, say).
    pub fn run_on_then<R>(
        mut self,
        mut platform: Platform,
        at_end: impl FnOnce(&kvmkit_memory::GuestRam) -> R,
    ) -> Result<(VmOutcome, R), Error> {
        platform.watch_on(self.machine().timeline());
        let signals = if platform.config().handle_signals {
            let blocked =
                TerminationSignals::block().map_err(Error::host("cannot block signals"))?;
            Some(Arc::new(blocked))
        } else {
            None
        };
        let vcpu_ended = Arc::new(
            EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
                .map_err(Error::host("cannot create an eventfd"))?,
        );
        let mut event_loop = platform.take_event_loop()?;
        let terminal = match platform.stdin_console()? {
            Some(console) => {
                // SAFETY: standard input is never closed by this process.
                let stdin = unsafe { BorrowedFd::borrow_raw(libc::STDIN_FILENO) };
                let terminal = RawTerminal::enable(stdin)
                    .map_err(Error::host("cannot put the terminal in raw mode"))?
                    .map(Arc::new);
                let watched = match terminal {
                    Some(_) => event_loop.add_terminal_input(std::io::stdin(), console),
                    None => event_loop.add_console_input(std::io::stdin(), console),
                };
                match watched {
                    // A regular file or /dev/null cannot be watched, and is no one typing.
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
                    watched => watched.map_err(Error::host("cannot watch stdin"))?,
                }
                terminal
            }
            None => None,
        };
        if let Some(signals) = &signals {
            event_loop
                .add_termination_signals(signals.clone(), terminal.clone())
                .map_err(Error::host("cannot watch for signals"))?;
        }
        event_loop
            .add_console_output(platform.serial().output().clone())
            .map_err(Error::host("cannot watch the serial output"))?;
        let ended = vcpu_ended.clone();
        let a_vcpu_ended = Arc::new(AtomicBool::new(false));
        let noted = Arc::clone(&a_vcpu_ended);
        event_loop
            .add(event_fd(&vcpu_ended), move || {
                let _ = ended.read();
                noted.store(true, Ordering::SeqCst);
                Flow::Stop
            })
            .map_err(Error::host("cannot watch the vCPU threads"))?;

        let policy = platform.config().seccomp;
        let filter_of =
            |kind| seccomp::filter(kind, policy).map_err(|source| Error::Seccomp { kind, source });
        let vcpu_filter = filter_of(ThreadKind::Vcpu)?.map(Arc::new);
        let io_filter = filter_of(ThreadKind::Io)?;
        let confine = vcpu_filter.map(|program| StartHook::new(move || seccomp::apply(&program)));
        // Read before the first guest instruction: the state a reboot puts back.
        let reboot = self.reboot_plan()?;
        let starts_paused = self.starts_paused();
        if starts_paused {
            // Its devices wait with it.
            platform.pause_devices();
        }
        if let Some(control) = platform.control_end() {
            // Before the vCPUs run: a request made once the guest runs finds it so.
            control.started(starts_paused);
        }
        let running =
            self.start_with(Arc::new(platform.io_handler()), Some(vcpu_ended), confine)?;
        if let Some(program) = &io_filter {
            // The vCPUs run: from here on the guest can reach this thread.
            if let Err(source) = seccomp::apply(program) {
                running.stop();
                return Err(Error::Host {
                    what: "cannot apply the I/O thread's seccomp filter",
                    source,
                });
            }
        }
        let end = loop {
            let end = event_loop.run();
            // Stopped by the control's wake, not by a vCPU's end: carry out what was
            // asked (a wake whose request an earlier turn took finds none) and go
            // back to the loop.
            if let (Ok(LoopEnd::Stopped), Some(control)) = (&end, platform.control_end()) {
                if !a_vcpu_ended.load(Ordering::SeqCst) {
                    control.serve(&running, &platform, reboot.as_ref());
                    continue;
                }
            }
            break end;
        };
        if let Some(control) = platform.control_end() {
            control.ended();
        }
        running.stop();
        let report = at_end(running.ram());
        let vcpus = running.join_all();
        for output in platform.console_outputs() {
            output.finish();
        }
        let end = end.map_err(Error::host("the event loop failed"))?;
        Ok((outcome(end, vcpus)?, report))
    }
}

/// One outcome from the loop's end and the vCPUs' ends: a device's or signal's
/// request wins; then a vCPU thread's panic; then a vCPU's error; then the first vCPU
/// that ended by itself, in vCPU order.
fn outcome(
    end: LoopEnd,
    vcpus: Vec<Result<VcpuOutcome, kvmkit_vcpu::Error>>,
) -> Result<VmOutcome, Error> {
    if let LoopEnd::Requested(request) = end {
        return Ok(match request {
            ShutdownReason::Reboot => VmOutcome::Reboot,
            ShutdownReason::DebugExit(code) => VmOutcome::DebugExit(code),
            ShutdownReason::Signal(signo) => VmOutcome::Signal(signo),
            ShutdownReason::Escape => VmOutcome::Escape,
            ShutdownReason::GuestPanic => VmOutcome::GuestPanic,
            ShutdownReason::VmmRequest => VmOutcome::VmmRequest,
            _ => VmOutcome::PowerOff,
        });
    }
    let mut ended = Vec::with_capacity(vcpus.len());
    let mut failure = None;
    for result in vcpus {
        match result {
            Ok(outcome) => ended.push(outcome),
            Err(kvmkit_vcpu::Error::ThreadPanicked { vcpu, message }) => {
                return Ok(VmOutcome::VcpuPanicked { vcpu, message });
            }
            Err(error) => {
                failure.get_or_insert(error);
            }
        }
    }
    if let Some(error) = failure {
        return Err(error.into());
    }
    Ok(vcpu_outcome(&ended))
}

fn vcpu_outcome(vcpus: &[VcpuOutcome]) -> VmOutcome {
    let ended = vcpus
        .iter()
        .enumerate()
        .find_map(|(id, outcome)| match outcome {
            VcpuOutcome::Exited(exit) => Some((u32::try_from(id).ok()?, exit.clone())),
            _ => None,
        });
    match ended {
        Some((vcpu, VcpuExit::Shutdown { rip })) => VmOutcome::TripleFault { vcpu, rip },
        Some((vcpu, VcpuExit::SystemEvent { kind, data })) => match kind {
            SystemEventKind::Reset => VmOutcome::Reboot,
            SystemEventKind::Shutdown => VmOutcome::PowerOff,
            SystemEventKind::Crash => VmOutcome::GuestCrash { vcpu },
            _ => VmOutcome::VcpuExit {
                vcpu,
                exit: VcpuExit::SystemEvent { kind, data },
            },
        },
        Some((vcpu, exit)) => VmOutcome::VcpuExit { vcpu, exit },
        // Every vCPU was stopped although nothing asked for it: report vCPU 0's state.
        None => VmOutcome::VcpuExit {
            vcpu: 0,
            exit: VcpuExit::Interrupted,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(exit: VcpuExit) -> Result<VcpuOutcome, kvmkit_vcpu::Error> {
        Ok(VcpuOutcome::Exited(exit))
    }

    #[test]
    fn a_device_request_wins_over_vcpu_ends() {
        let vcpus = vec![exited(VcpuExit::Shutdown { rip: 1 })];

        let result = outcome(LoopEnd::Requested(ShutdownReason::DebugExit(7)), vcpus);

        assert_eq!(result.unwrap(), VmOutcome::DebugExit(7));
    }

    #[test]
    fn a_triple_fault_names_the_vcpu_and_rip() {
        let vcpus = vec![
            Ok(VcpuOutcome::Stopped),
            exited(VcpuExit::Shutdown { rip: 0x1234 }),
        ];

        let result = outcome(LoopEnd::Stopped, vcpus).unwrap();

        assert_eq!(
            result,
            VmOutcome::TripleFault {
                vcpu: 1,
                rip: 0x1234
            }
        );
        assert_eq!(result.exit_status(), 0, "a triple fault resets a PC");
    }

    #[test]
    fn a_pvpanic_report_and_the_escape_are_outcomes_with_their_statuses() {
        let panic = outcome(LoopEnd::Requested(ShutdownReason::GuestPanic), vec![]).unwrap();
        let escape = outcome(LoopEnd::Requested(ShutdownReason::Escape), vec![]).unwrap();

        assert_eq!(panic, VmOutcome::GuestPanic);
        assert_eq!(panic.exit_status(), VmOutcome::GUEST_CRASH);
        assert_eq!(escape, VmOutcome::Escape);
        assert_eq!(escape.exit_status(), 130);
    }

    #[test]
    fn a_guest_crash_report_is_its_own_outcome_with_a_failing_status() {
        let crash = VcpuExit::SystemEvent {
            kind: SystemEventKind::Crash,
            data: vec![],
        };

        let result = outcome(LoopEnd::Stopped, vec![exited(crash)]).unwrap();

        assert_eq!(result, VmOutcome::GuestCrash { vcpu: 0 });
        assert_ne!(result.exit_status(), 0);
    }

    #[test]
    fn a_vcpu_panic_is_an_outcome_not_an_error() {
        let vcpus = vec![
            Ok(VcpuOutcome::Stopped),
            Err(kvmkit_vcpu::Error::ThreadPanicked {
                vcpu: 1,
                message: "device bug".into(),
            }),
        ];

        let result = outcome(LoopEnd::Stopped, vcpus).unwrap();

        assert_eq!(
            result,
            VmOutcome::VcpuPanicked {
                vcpu: 1,
                message: "device bug".into()
            }
        );
        assert_eq!(result.exit_status(), VmOutcome::VCPU_PANICKED);
    }

    #[test]
    fn exit_status_of_a_signal_follows_the_shell_convention() {
        assert_eq!(VmOutcome::Signal(libc::SIGTERM).exit_status(), 143);
        assert_eq!(VmOutcome::DebugExit(3).exit_status(), 3);
    }

    #[test]
    fn debug_exit_codes_outside_1_to_255_never_read_as_success_or_wrap() {
        for code in [0, 256, 512, 0x8000_0000, u32::MAX] {
            assert_eq!(
                VmOutcome::DebugExit(code).exit_status(),
                VmOutcome::DEBUG_EXIT_OUT_OF_RANGE,
                "{code:#x}"
            );
        }
        assert_eq!(VmOutcome::DebugExit(255).exit_status(), 255);
        assert_eq!(VmOutcome::DebugExit(1).exit_status(), 1);
    }
}
