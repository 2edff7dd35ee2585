// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! One virtual CPU and its run loop.

use std::sync::Arc;

use kvm_bindings::{
    kvm_mp_state, kvm_regs, kvm_run, KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_IO, KVM_EXIT_IO_OUT,
    KVM_MP_STATE_INIT_RECEIVED, KVM_MP_STATE_RUNNABLE, KVM_MP_STATE_UNINITIALIZED,
};
use kvm_ioctls::{VcpuExit as KvmExit, VcpuFd};
use vm_memory::GuestMemory;

use crate::owners::MemoryOwners;
use crate::{x86, CpuMode, Error, ExitReason, ExitStats, IoAccess, IoAction, IoHandler, IoKind};
use crate::{SystemEventKind, VcpuExit};

/// A virtual CPU: its KVM file descriptor, its id and its exit counters.
///
/// A `Vcpu` is run by one thread at a time ([`Vcpu::run`] takes `&mut self`); move it to
/// its own thread with [`VcpuThread`](crate::VcpuThread) to get kick, pause and resume.
pub struct Vcpu {
    // Declared first: closed before `_memory` lets go of the guest memory, which KVM
    // maps until the last descriptor of the VM closes.
    fd: VcpuFd,
    id: u32,
    stats: Arc<ExitStats>,
    in_kernel_apic: bool,
    /// The MSRs KVM lists for saving.
    msr_indices: Arc<Vec<u32>>,
    _memory: Arc<MemoryOwners>,
}

impl std::fmt::Debug for Vcpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vcpu")
            .field("id", &self.id)
            .field("in_kernel_apic", &self.in_kernel_apic)
            .finish_non_exhaustive()
    }
}

impl Vcpu {
    pub(crate) fn new(
        fd: VcpuFd,
        id: u32,
        in_kernel_apic: bool,
        msr_indices: Arc<Vec<u32>>,
        memory: Arc<MemoryOwners>,
    ) -> Self {
        Vcpu {
            fd,
            id,
            stats: Arc::new(ExitStats::default()),
            in_kernel_apic,
            msr_indices,
            _memory: memory,
        }
    }

    /// Reads the vCPU's state (it must not be in `KVM_RUN`: a paused vCPU thread
    /// does this through [`VcpuHandle::save_state`](crate::VcpuHandle::save_state)).
    pub fn save_state(&self) -> Result<x86::VcpuState, Error> {
        x86::VcpuState::save(&self.fd, &self.msr_indices, self.in_kernel_apic)
    }

    /// Sets the vCPU's state to `state`, saved from a vCPU of a VM made as this one's.
    pub fn restore_state(&self, state: &x86::VcpuState) -> Result<(), Error> {
        state.restore(&self.fd)
    }

    /// The vCPU id (also its APIC id).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Puts the vCPU into `mode` with execution starting at guest-physical `entry` and
    /// the stack pointer at `stack_top`, writing the GDT and page tables the mode needs
    /// into `memory` (see the addresses in [`x86`](crate::x86)).
    ///
    /// With the in-kernel irqchip, a vCPU other than 0 starts as an application
    /// processor waiting for a startup IPI; this makes it runnable at `entry` instead.
    pub fn enter_mode<M: GuestMemory + ?Sized>(
        &self,
        memory: &M,
        mode: CpuMode,
        entry: u64,
        stack_top: u64,
    ) -> Result<(), Error> {
        x86::set_mode(&self.fd, memory, mode, entry, stack_top)?;
        if self.in_kernel_apic {
            let runnable = kvm_mp_state {
                mp_state: KVM_MP_STATE_RUNNABLE,
            };
            self.fd
                .set_mp_state(runnable)
                .map_err(Error::kvm("KVM_SET_MP_STATE"))?;
        }
        Ok(())
    }

    /// Whether the vCPU waits for INIT and startup IPIs from the guest (an application
    /// processor not yet started), rather than being runnable.
    pub fn waits_for_startup(&self) -> Result<bool, Error> {
        let state = self
            .fd
            .get_mp_state()
            .map_err(Error::kvm("KVM_GET_MP_STATE"))?;
        Ok(matches!(
            state.mp_state,
            KVM_MP_STATE_UNINITIALIZED | KVM_MP_STATE_INIT_RECEIVED
        ))
    }

    /// The general-purpose registers.
    pub fn regs(&self) -> Result<kvm_regs, Error> {
        self.fd.get_regs().map_err(Error::kvm("KVM_GET_REGS"))
    }

    /// Sets the general-purpose registers.
    pub fn set_regs(&self, regs: &kvm_regs) -> Result<(), Error> {
        self.fd.set_regs(regs).map_err(Error::kvm("KVM_SET_REGS"))
    }

    /// The live exit counters, shared with whoever holds a clone.
    pub fn stats(&self) -> &Arc<ExitStats> {
        &self.stats
    }

    /// Runs the guest until the next exit that is not port or MMIO I/O, handing every
    /// I/O access to `handler` on the way. Returns [`VcpuExit::IoStop`] if the handler
    /// asked to stop, and [`VcpuExit::Interrupted`] if the vCPU was kicked.
    pub fn run<H: IoHandler + ?Sized>(&mut self, handler: &H) -> Result<VcpuExit, Error> {
        self.stats.note_first_run();
        loop {
            match self.run_once(handler)? {
                VcpuExit::Io(_) => continue,
                exit => return Ok(exit),
            }
        }
    }

    /// Enters the guest once and returns the exit that ended this entry. A port or MMIO
    /// access is handed to `handler` before this returns [`VcpuExit::Io`].
    #[inline]
    pub fn run_once<H: IoHandler + ?Sized>(&mut self, handler: &H) -> Result<VcpuExit, Error> {
        let exit = match self.fd.run() {
            Ok(exit) => exit,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.fd.set_kvm_immediate_exit(0);
                self.stats.record(ExitReason::Interrupted);
                return Ok(VcpuExit::Interrupted);
            }
            Err(source) => {
                self.stats.record(ExitReason::Other);
                return Err(Error::Run {
                    vcpu: self.id,
                    source,
                });
            }
        };
        let stats = &self.stats;
        let (reason, result) = match exit {
            // kvm-ioctls hands port I/O over as size × count bytes, which cannot tell
            // `rep insb` from `in eax, dx`: read the element size from kvm_run instead.
            KvmExit::IoOut(..) | KvmExit::IoIn(..) => return Ok(self.port_io(handler)),
            KvmExit::MmioWrite(addr, data) => {
                let action = handler.mmio_write(addr, data);
                let access = IoAccess::new(IoKind::MmioWrite, addr, data.len(), 1);
                (ExitReason::MmioWrite, Ok(io_exit(action, access)))
            }
            KvmExit::MmioRead(addr, data) => {
                let action = handler.mmio_read(addr, data);
                let access = IoAccess::new(IoKind::MmioRead, addr, data.len(), 1);
                (ExitReason::MmioRead, Ok(io_exit(action, access)))
            }
            KvmExit::Hlt => (ExitReason::Hlt, Ok(VcpuExit::Hlt)),
            KvmExit::Intr => (ExitReason::Interrupted, Ok(VcpuExit::Interrupted)),
            KvmExit::Hypercall(call) => (
                ExitReason::Hypercall,
                Ok(VcpuExit::Hypercall {
                    nr: call.nr,
                    args: call.args,
                }),
            ),
            KvmExit::SystemEvent(kind, data) => (
                ExitReason::SystemEvent,
                Ok(VcpuExit::SystemEvent {
                    kind: SystemEventKind::from_kvm(kind),
                    data: data.to_vec(),
                }),
            ),
            KvmExit::Shutdown => (ExitReason::Shutdown, Err(ExitDetail::Shutdown)),
            KvmExit::InternalError => (ExitReason::Other, Err(ExitDetail::InternalError)),
            KvmExit::FailEntry(reason, cpu) => {
                (ExitReason::Other, Err(ExitDetail::FailEntry(reason, cpu)))
            }
            KvmExit::MemoryFault { flags, gpa, size } => (
                ExitReason::Other,
                Err(ExitDetail::MemoryFault { flags, gpa, size }),
            ),
            other => (
                ExitReason::Other,
                Err(ExitDetail::Other(format!("{other:?}"))),
            ),
        };
        stats.record(reason);
        match result {
            Ok(exit) => Ok(exit),
            Err(detail) => self.exit_with_state(detail),
        }
    }

    /// Hands the port access of a `KVM_EXIT_IO` to `handler`, one element at a time: a
    /// string instruction (`rep insb`, `rep outsw`...) becomes `count` accesses of its
    /// element size, so every device sees accesses of the width the guest used.
    #[inline]
    fn port_io<H: IoHandler + ?Sized>(&mut self, handler: &H) -> VcpuExit {
        let run: &mut kvm_run = self.fd.get_kvm_run();
        debug_assert_eq!(run.exit_reason, KVM_EXIT_IO);
        // SAFETY: KVM_RUN just returned KVM_EXIT_IO (kvm-ioctls decoded it as port I/O),
        // so the kernel filled the `io` member of the exit union.
        let io = unsafe { run.__bindgen_anon_1.io };
        let size = usize::from(io.size).max(1);
        let len = size * io.count as usize;
        // An offset into the kvm_run mapping, which lies in this process's address
        // space: it fits a usize.
        #[allow(clippy::cast_possible_truncation)]
        let data_offset = io.data_offset as usize;
        let base = (run as *mut kvm_run).cast::<u8>();
        // SAFETY: for KVM_EXIT_IO the kernel places `size * count` bytes (at most one
        // page) at `data_offset` inside the vCPU's kvm_run mapping, as kvm-ioctls'
        // own decoding relies on; that mapping lives as long as `self.fd`, and nothing
        // else refers to those bytes while this borrow of `self.fd` lasts.
        let data = unsafe { std::slice::from_raw_parts_mut(base.add(data_offset), len) };
        let write = u32::from(io.direction) == KVM_EXIT_IO_OUT;
        let mut action = IoAction::Continue;
        for element in data.chunks_exact_mut(size) {
            let element_action = if write {
                handler.pio_write(io.port, element)
            } else {
                handler.pio_read(io.port, element)
            };
            if element_action == IoAction::Stop {
                action = IoAction::Stop;
            }
        }
        let (reason, kind) = if write {
            (ExitReason::PioWrite, IoKind::PioWrite)
        } else {
            (ExitReason::PioRead, IoKind::PioRead)
        };
        self.stats.record(reason);
        let access = IoAccess::new(kind, u64::from(io.port), size, io.count as usize);
        io_exit(action, access)
    }

    /// The `immediate_exit` byte of this vCPU's kvm_run page, for the kick handler.
    pub(crate) fn immediate_exit_byte(&mut self) -> *mut u8 {
        &mut self.fd.get_kvm_run().immediate_exit
    }

    /// Builds the result of an exit that needs the guest state (RIP, KVM's internal
    /// error words), read once `KVM_RUN`'s borrow of the run structure has ended.
    #[cold]
    fn exit_with_state(&mut self, detail: ExitDetail) -> Result<VcpuExit, Error> {
        let rip = self.fd.get_regs().map(|r| r.rip).unwrap_or(u64::MAX);
        let vcpu = self.id;
        match detail {
            ExitDetail::Shutdown => Ok(VcpuExit::Shutdown { rip }),
            ExitDetail::Other(reason) => Ok(VcpuExit::Unhandled { reason, rip }),
            ExitDetail::InternalError => {
                let (suberror, data) = self.internal_error();
                Err(Error::InternalError {
                    vcpu,
                    suberror,
                    data,
                    rip,
                })
            }
            ExitDetail::FailEntry(reason, cpu) => Err(Error::FailEntry {
                vcpu,
                reason,
                cpu,
                rip,
            }),
            ExitDetail::MemoryFault { flags, gpa, size } => Err(Error::MemoryFault {
                vcpu,
                gpa,
                size,
                flags,
            }),
        }
    }

    fn internal_error(&mut self) -> (u32, Vec<u64>) {
        let run = self.fd.get_kvm_run();
        if run.exit_reason != KVM_EXIT_INTERNAL_ERROR {
            return (0, Vec::new());
        }
        // SAFETY: exit_reason is KVM_EXIT_INTERNAL_ERROR, so the kernel filled the
        // `internal` member of the exit union.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let count = (internal.ndata as usize).min(internal.data.len());
        (internal.suberror, internal.data[..count].to_vec())
    }

    /// The kvm-ioctls handle, for what this crate does not wrap.
    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }
}

/// Exits whose result needs more of the vCPU state than the exit itself carries.
enum ExitDetail {
    Shutdown,
    InternalError,
    FailEntry(u64, u32),
    MemoryFault { flags: u64, gpa: u64, size: u64 },
    Other(String),
}

#[inline]
fn io_exit(action: IoAction, access: IoAccess) -> VcpuExit {
    match action {
        IoAction::Continue => VcpuExit::Io(access),
        IoAction::Stop => VcpuExit::IoStop(access),
    }
}
