// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! How a device (or the event loop) asks for the whole VM to end.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use vmm_sys_util::eventfd::EventFd;

/// Why the platform asks the VM to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShutdownReason {
    /// The guest asked for a reset (i8042 command 0xFE).
    Reboot,
    /// The guest asked to power off.
    PowerOff,
    /// The guest wrote its exit code to the debug exit port.
    DebugExit(u32),
    /// The VMM got a termination signal (SIGINT, SIGTERM, SIGHUP, SIGQUIT).
    Signal(i32),
    /// The user typed the terminal's escape for ending the VM (Ctrl-A x; see
    /// [`EventLoop::add_terminal_input`](crate::EventLoop::add_terminal_input)).
    Escape,
    /// The guest reported a panic on the pvpanic device.
    GuestPanic,
    /// The VMM's control plane asked for the VM's end (an API's `vm.shutdown`).
    VmmRequest,
}

/// The one-shot request to shut the whole VM down (not to be confused with a VM
/// exit, which only returns one vCPU to the VMM), shared by devices, the event loop and the vCPUs'
/// I/O handler: the first request wins, and its event fd wakes the event loop.
#[derive(Debug)]
pub struct VmShutdown {
    requested: AtomicBool,
    request: OnceLock<ShutdownReason>,
    event: EventFd,
}

impl VmShutdown {
    /// A fresh, unrequested exit.
    pub fn new() -> io::Result<Self> {
        Ok(VmShutdown {
            requested: AtomicBool::new(false),
            request: OnceLock::new(),
            event: EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?,
        })
    }

    /// Asks the VM to end for `request`; later requests are ignored.
    pub fn request(&self, request: ShutdownReason) {
        if self.request.set(request).is_ok() {
            self.requested.store(true, Ordering::Release);
            // A full counter still wakes the loop; nothing else can fail here.
            let _ = self.event.write(1);
        }
    }

    /// Whether an exit was requested (one atomic load: cheap on the exit path).
    #[inline]
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// The request, if any.
    pub fn get(&self) -> Option<ShutdownReason> {
        self.request.get().copied()
    }

    /// The event fd that becomes readable on the first request.
    pub fn event(&self) -> &EventFd {
        &self.event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_request_wins_and_signals_the_event() {
        let exit = VmShutdown::new().unwrap();
        assert!(!exit.is_requested());

        exit.request(ShutdownReason::DebugExit(3));
        exit.request(ShutdownReason::Reboot);

        assert!(exit.is_requested());
        assert_eq!(exit.get(), Some(ShutdownReason::DebugExit(3)));
        assert_eq!(exit.event().read().unwrap(), 1);
    }
}
