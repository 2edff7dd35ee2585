// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Typed VM exits and the I/O handler seam.

/// Which of the four kinds of trapped I/O an access is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IoKind {
    /// `in` from an I/O port.
    PioRead,
    /// `out` to an I/O port.
    PioWrite,
    /// A load from guest-physical memory that is not RAM.
    MmioRead,
    /// A store to guest-physical memory that is not RAM.
    MmioWrite,
}

/// One trapped I/O exit, after the handler has seen it.
///
/// A string port instruction (`rep outsb`, `rep insw`...) is one exit of `count`
/// elements of `size` bytes each; the handler saw `count` accesses of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct IoAccess {
    /// Which kind of access.
    pub kind: IoKind,
    /// The port number (port I/O) or guest-physical address (MMIO).
    pub addr: u64,
    /// Bytes per access: 1, 2, 4 (or 8 for MMIO).
    pub size: usize,
    /// Accesses in the exit: 1, or the repeat count of a string port instruction.
    pub count: usize,
}

impl IoAccess {
    /// An exit of `count` accesses of `size` bytes of `kind` at `addr`.
    pub fn new(kind: IoKind, addr: u64, size: usize, count: usize) -> Self {
        IoAccess {
            kind,
            addr,
            size,
            count,
        }
    }

    /// Bytes transferred in the exit: `size * count`.
    pub fn len(&self) -> usize {
        self.size * self.count
    }

    /// Whether the exit moved no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the vCPU does after an I/O handler returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoAction {
    /// Re-enter the guest.
    #[default]
    Continue,
    /// Return [`VcpuExit::IoStop`] to the caller instead of re-entering the guest,
    /// e.g. after a reset or power-off register was written.
    Stop,
}

/// The narrow seam between a vCPU and the devices: every port and MMIO access that KVM
/// hands to userspace arrives here, on the thread of the vCPU that made it.
///
/// `data.len()` is the access size the guest used: 1, 2 or 4 bytes for ports, up to 8
/// for MMIO. A string port instruction (`rep insb`, `rep outsw`...) arrives as one
/// call per element, in order. A read fills all of `data`; for an address nothing
/// claims, fill all-ones as a real bus does. The methods take `&self` so one handler can
/// serve all vCPUs at once, each device keeping its own interior lock.
///
/// Every method has a default that ignores the access (reads return all-ones), so a
/// handler implements only what it serves.
pub trait IoHandler {
    /// The guest read `data.len()` bytes from `port`.
    fn pio_read(&self, port: u16, data: &mut [u8]) -> IoAction {
        let _ = port;
        data.fill(0xff);
        IoAction::Continue
    }

    /// The guest wrote `data` to `port`.
    fn pio_write(&self, port: u16, data: &[u8]) -> IoAction {
        let _ = (port, data);
        IoAction::Continue
    }

    /// The guest read `data.len()` bytes from guest-physical `addr`.
    fn mmio_read(&self, addr: u64, data: &mut [u8]) -> IoAction {
        let _ = addr;
        data.fill(0xff);
        IoAction::Continue
    }

    /// The guest wrote `data` to guest-physical `addr`.
    fn mmio_write(&self, addr: u64, data: &[u8]) -> IoAction {
        let _ = (addr, data);
        IoAction::Continue
    }
}

impl<T: IoHandler + ?Sized> IoHandler for std::sync::Arc<T> {
    fn pio_read(&self, port: u16, data: &mut [u8]) -> IoAction {
        (**self).pio_read(port, data)
    }
    fn pio_write(&self, port: u16, data: &[u8]) -> IoAction {
        (**self).pio_write(port, data)
    }
    fn mmio_read(&self, addr: u64, data: &mut [u8]) -> IoAction {
        (**self).mmio_read(addr, data)
    }
    fn mmio_write(&self, addr: u64, data: &[u8]) -> IoAction {
        (**self).mmio_write(addr, data)
    }
}

/// The kind of a `KVM_EXIT_SYSTEM_EVENT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SystemEventKind {
    /// The guest asked to power off (e.g. ACPI S5 with a PSCI-like interface).
    Shutdown,
    /// The guest asked to reset.
    Reset,
    /// The guest reported a crash.
    Crash,
    /// Another event type, by its KVM number.
    Other(u32),
}

impl SystemEventKind {
    pub(crate) fn from_kvm(kind: u32) -> Self {
        match kind {
            kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => SystemEventKind::Shutdown,
            kvm_bindings::KVM_SYSTEM_EVENT_RESET => SystemEventKind::Reset,
            kvm_bindings::KVM_SYSTEM_EVENT_CRASH => SystemEventKind::Crash,
            other => SystemEventKind::Other(other),
        }
    }
}

/// Why `KVM_RUN` returned, as a value the VMM can act on.
///
/// Failures that leave the vCPU unusable (internal errors, failed entry, memory faults)
/// are [`Error`](crate::Error)s instead, with the guest RIP.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VcpuExit {
    /// An I/O access that the [`IoHandler`] served; the vCPU can be run again.
    Io(IoAccess),
    /// An I/O access after which the handler returned [`IoAction::Stop`].
    IoStop(IoAccess),
    /// The guest executed `hlt` and no in-kernel local APIC handles it.
    Hlt,
    /// The guest triple-faulted (or otherwise caused a shutdown) at `rip`.
    Shutdown {
        /// The guest instruction pointer when KVM reported the shutdown.
        rip: u64,
    },
    /// The guest asked the platform for a power event.
    SystemEvent {
        /// What it asked for.
        kind: SystemEventKind,
        /// Extra data words KVM supplied.
        data: Vec<u64>,
    },
    /// The guest made a hypercall that KVM forwarded to userspace.
    Hypercall {
        /// The hypercall number.
        nr: u64,
        /// Its arguments.
        args: [u64; 6],
    },
    /// `KVM_RUN` returned without a guest exit: the vCPU was kicked or a signal arrived.
    Interrupted,
    /// An exit kvmkit does not interpret, with KVM's exit reason and the guest RIP.
    Unhandled {
        /// KVM's description of the exit.
        reason: String,
        /// The guest instruction pointer.
        rip: u64,
    },
}
