// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What can go wrong while building, booting or running a machine.

/// What can go wrong while building or running a [`Machine`](crate::Machine).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Guest memory could not be laid out or mapped.
    #[error(transparent)]
    Memory(#[from] kvmkit_memory::Error),
    /// KVM refused an operation, or a vCPU failed.
    #[error(transparent)]
    Vcpu(#[from] kvmkit_vcpu::Error),
    /// The boot image could not be loaded.
    #[error(transparent)]
    Boot(#[from] kvmkit_boot::BootError),
    /// A device could not be placed on its bus.
    #[error(transparent)]
    Bus(#[from] kvmkit_devices::BusError),
    /// A machine needs at least one vCPU.
    #[error("a machine needs at least one vCPU")]
    NoVcpus,
    /// More vCPUs than KVM allows on this host.
    #[error("{asked} vCPUs asked for, KVM allows {max} on this host")]
    TooManyVcpus {
        /// The vCPUs asked for.
        asked: u32,
        /// KVM's limit.
        max: usize,
    },
    /// A region of guest RAM is larger than one KVM memslot maps.
    #[error("a guest memory region of {size:#x} bytes is more than KVM maps in one memslot ({max:#x} bytes)")]
    MemslotTooLarge {
        /// The region's size.
        size: u64,
        /// KVM's limit.
        max: u64,
    },
    /// The memory size in bytes does not fit in 64 bits.
    #[error("the memory size does not fit in 64 bits of bytes")]
    MemorySizeOverflow,
    /// A kernel on more than one vCPU needs the in-kernel irqchip, which delivers the
    /// startup IPIs.
    #[error("a kernel on {vcpus} vCPUs needs the in-kernel irqchip to start the others")]
    KernelNeedsIrqchip {
        /// The vCPUs.
        vcpus: usize,
    },
    /// A boot image asks for its vCPUs' stacks below address 0.
    #[error("no room for {stacks:#x} bytes of stacks below {stack_top:#x}")]
    NoRoomForStacks {
        /// Bytes of stacks.
        stacks: u64,
        /// Where the stacks end.
        stack_top: u64,
    },
    /// A long-mode program's stacks reach down into the boot page tables.
    #[error("a long-mode program must load at or above {min_load_addr:#x} to leave room for the page tables and {vcpus} vCPU stacks; it loads at {load_addr:#x}")]
    ProgramOverlapsPageTables {
        /// Where it loads.
        load_addr: u64,
        /// The lowest address it may load at.
        min_load_addr: u64,
        /// The vCPUs, each with a stack.
        vcpus: usize,
    },
    /// A boot image asks for an entry protocol this machine does not know.
    #[error("the image asks for an entry protocol this machine does not know")]
    UnknownEntryProtocol,
    /// Every interrupt line for virtio-mmio devices is taken.
    #[error("at most {max} virtio-mmio devices: every interrupt line for them is taken")]
    TooManyVirtioDevices {
        /// The most devices a platform holds.
        max: usize,
    },
    /// Devices can no longer be added: the platform's I/O thread runs (or ran).
    #[error("the platform is running already")]
    PlatformRunning,
    /// A snapshot could not be restored.
    #[error("cannot restore the snapshot")]
    Snapshot(#[from] crate::SnapshotError),
    /// The configuration feeds stdin to the virtio console, and none was added.
    #[error("stdin is to feed the virtio console, and the platform has none")]
    NoVirtioConsole,
    /// A seccomp filter could not be built.
    #[error("cannot build the {kind:?} thread's seccomp filter")]
    Seccomp {
        /// The thread kind.
        kind: crate::seccomp::ThreadKind,
        /// What seccompiler refused.
        #[source]
        source: seccompiler::BackendError,
    },
    /// A host resource (an event fd, epoll, the terminal, signals) failed.
    #[error("{what}")]
    Host {
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn host(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
        move |source| Error::Host { what, source }
    }
}

/// An error and its causes on one line, `error: cause: cause`, as a person reads it
/// (each error's own message names only its own part; the causes come from
/// [`source`](std::error::Error::source)).
///
/// ```
/// let error = kvmkit::Error::Host {
///     what: "cannot create an eventfd",
///     source: std::io::Error::from_raw_os_error(24),
/// };
/// let line = kvmkit::Causes(&error).to_string();
/// assert!(line.starts_with("cannot create an eventfd: Too many open files"));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Causes<'a>(pub &'a (dyn std::error::Error + 'a));

impl std::fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
