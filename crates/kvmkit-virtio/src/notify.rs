// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The seam to the hypervisor's notification shortcut: "signal this event fd when the
//! guest notifies queue N", without naming KVM.

use std::io;

use vmm_sys_util::eventfd::EventFd;

/// Registers queue notifiers with the hypervisor, so that the driver's write of a
/// queue's index to the notify register signals that queue's event fd in the kernel,
/// without an exit to the VMM (KVM's ioeventfd). A VMM without such a shortcut uses
/// [`NoShortcut`]: the transport then signals the same event fd itself when the write
/// reaches it, with the same behaviour.
pub trait QueueNotifiers: Send + Sync {
    /// Makes 32-bit writes of `queue` to guest-physical `addr` signal `event`.
    /// `Ok(false)` if this VMM cannot.
    fn register(&self, addr: u64, queue: u16, event: &EventFd) -> io::Result<bool>;
    /// Undoes a registration made with the same arguments.
    fn unregister(&self, addr: u64, queue: u16, event: &EventFd) -> io::Result<()>;
}

/// No notification shortcut: every notification reaches the transport as an MMIO
/// write.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoShortcut;

impl QueueNotifiers for NoShortcut {
    fn register(&self, _addr: u64, _queue: u16, _event: &EventFd) -> io::Result<bool> {
        Ok(false)
    }

    fn unregister(&self, _addr: u64, _queue: u16, _event: &EventFd) -> io::Result<()> {
        Ok(())
    }
}
