// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

use std::path::PathBuf;

/// What can go wrong while controlling a VM or a vCPU.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The KVM device path is empty.
    #[error("the KVM device path is empty: give the path of the KVM device, usually /dev/kvm")]
    EmptyPath,
    /// The path opened, but it is not the KVM device.
    #[error(
        "{path} is not a KVM device ({reason}): give the path of the KVM device, usually /dev/kvm"
    )]
    NotKvmDevice {
        /// The path that was opened.
        path: PathBuf,
        /// What it is instead.
        reason: &'static str,
    },
    /// The KVM device node does not exist.
    #[error(
        "{path} does not exist: KVM is not available on this host. Load the module \
         (`modprobe kvm_intel` or `modprobe kvm_amd`), enable virtualization in the firmware, \
         or, inside a VM, enable nested virtualization"
    )]
    DeviceMissing {
        /// The device path that was tried.
        path: PathBuf,
    },
    /// The KVM device node exists but this user may not open it.
    #[error(
        "permission denied opening {path}: add this user to the group that owns it \
         (usually `kvm`: `sudo usermod -aG kvm $USER`, then log in again) or run as root"
    )]
    PermissionDenied {
        /// The device path that was tried.
        path: PathBuf,
    },
    /// Opening the KVM device failed for another reason.
    #[error("cannot open {path}")]
    Open {
        /// The device path that was tried.
        path: PathBuf,
        /// The error from open.
        #[source]
        source: std::io::Error,
    },
    /// The kernel speaks another KVM API than the stable version 12.
    #[error("KVM API version {found} is not supported (expected 12)")]
    ApiVersion {
        /// The version the kernel reported.
        found: i32,
    },
    /// The kernel lacks a KVM capability that kvmkit needs.
    #[error("KVM lacks the capability {0}, which kvmkit needs")]
    MissingCapability(&'static str),
    /// A KVM ioctl failed.
    #[error("{op} failed")]
    Kvm {
        /// What was being done, e.g. `KVM_CREATE_VM`.
        op: &'static str,
        /// The errno the ioctl returned.
        #[source]
        source: vmm_sys_util::errno::Error,
    },
    /// A memory region could not be registered as a memslot.
    #[error("memslot {slot} (guest memory at {guest_addr:#x}, {size:#x} bytes)")]
    Memslot {
        /// The memslot number.
        slot: u32,
        /// Guest-physical start of the region.
        guest_addr: u64,
        /// Size of the region.
        size: u64,
        /// Why.
        #[source]
        reason: MemslotError,
    },
    /// No memslot has this number.
    #[error("memslot {0} does not exist in this VM")]
    NoMemslot(u32),
    /// An operation needs the in-kernel irqchip, which was not created.
    #[error("{0} needs the in-kernel irqchip: call Vm::create_irqchip first")]
    NoIrqchip(&'static str),
    /// The guest memory cannot hold the CPU-mode tables at their fixed addresses.
    #[error("cannot write the {what} at guest address {addr:#x}")]
    GuestMemory {
        /// What was being written.
        what: &'static str,
        /// Where.
        addr: u64,
        /// Why.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// The entry point cannot be reached in the requested CPU mode.
    #[error("entry point {entry:#x} is not reachable in {mode:?} mode")]
    EntryOutOfReach {
        /// The mode asked for.
        mode: crate::CpuMode,
        /// The entry point.
        entry: u64,
    },
    /// A vCPU id beyond what KVM allows in one VM.
    #[error("vcpu id {id} is out of range: KVM allows {max} vCPUs in a VM")]
    VcpuId {
        /// The id asked for.
        id: u32,
        /// KVM's limit.
        max: usize,
    },
    /// KVM accepted fewer MSRs than were set.
    #[error("KVM_SET_MSRS accepted {set} of {wanted} MSRs; MSR {first_rejected:#x} was refused")]
    MsrRejected {
        /// How many were accepted.
        set: usize,
        /// How many were given.
        wanted: usize,
        /// The index of the first MSR that was not accepted.
        first_rejected: u32,
    },
    /// `KVM_RUN` itself failed.
    #[error("KVM_RUN on vcpu {vcpu} failed")]
    Run {
        /// The vCPU id.
        vcpu: u32,
        /// The errno.
        #[source]
        source: vmm_sys_util::errno::Error,
    },
    /// KVM could not emulate what the guest did (KVM_EXIT_INTERNAL_ERROR).
    #[error(
        "vcpu {vcpu}: KVM internal error (suberror {suberror}) at rip {rip:#x}, data {data:x?}"
    )]
    InternalError {
        /// The vCPU id.
        vcpu: u32,
        /// KVM's suberror: 1 emulation failure, 2 simultaneous exceptions, 3 delivery event, ...
        suberror: u32,
        /// Extra words KVM supplied.
        data: Vec<u64>,
        /// The guest instruction pointer.
        rip: u64,
    },
    /// The hardware refused to enter the guest (KVM_EXIT_FAIL_ENTRY).
    #[error("vcpu {vcpu}: VM entry failed (hardware reason {reason:#x} on host cpu {cpu}) at rip {rip:#x}")]
    FailEntry {
        /// The vCPU id.
        vcpu: u32,
        /// The hardware entry failure reason.
        reason: u64,
        /// The host CPU.
        cpu: u32,
        /// The guest instruction pointer.
        rip: u64,
    },
    /// The guest touched memory KVM could not resolve (KVM_EXIT_MEMORY_FAULT).
    #[error("vcpu {vcpu}: memory fault at gpa {gpa:#x} ({size:#x} bytes, flags {flags:#x})")]
    MemoryFault {
        /// The vCPU id.
        vcpu: u32,
        /// Guest-physical address.
        gpa: u64,
        /// Size of the access.
        size: u64,
        /// KVM's flags.
        flags: u64,
    },
    /// A vCPU thread could not be started or configured.
    #[error("vcpu thread {vcpu}: {what}")]
    Thread {
        /// The vCPU id.
        vcpu: u32,
        /// What failed.
        what: String,
        /// The error behind it.
        #[source]
        source: std::io::Error,
    },
    /// The kick signal already has a handler that kvmkit did not install.
    #[error(
        "signal {signal} (SIGRTMIN) already has a handler that kvmkit did not install; \
         kvmkit kicks vCPU threads with it, so the VMM must leave it to kvmkit"
    )]
    KickSignalTaken {
        /// The signal number.
        signal: i32,
    },
    /// A vCPU thread panicked (a bug in an I/O handler, a device or kvmkit).
    #[error("vcpu thread {vcpu} panicked: {message}")]
    ThreadPanicked {
        /// The vCPU id.
        vcpu: u32,
        /// The panic's message, when it was a string.
        message: String,
    },
    /// The vCPU's state was asked for while its thread ran it (or after it ended):
    /// pause it first.
    #[error("vcpu {vcpu} is not paused: its state is read and written only while it is")]
    NotPaused {
        /// The vCPU id.
        vcpu: u32,
    },
}

/// Why a memory region could not become a memslot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemslotError {
    /// KVM's memslot limit would be passed.
    #[error("KVM allows only {max} memslots")]
    TooMany {
        /// KVM's limit.
        max: usize,
    },
    /// The region has no mapping in this process.
    #[error("the region has no host mapping")]
    NoHostMapping(#[source] vm_memory::GuestMemoryError),
    /// KVM refused the region.
    #[error("KVM_SET_USER_MEMORY_REGION failed")]
    Kvm(#[source] vmm_sys_util::errno::Error),
    /// The slot does not log dirty pages.
    #[error("it was registered without dirty-page logging")]
    NotLogging,
}

impl Error {
    pub(crate) fn kvm(op: &'static str) -> impl FnOnce(vmm_sys_util::errno::Error) -> Error {
        move |source| Error::Kvm { op, source }
    }
}
