// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! One virtual CPU and its run loop.

use std::sync::Arc;

use kvm_bindings::{kvm_mp_state, kvm_regs, KVM_EXIT_INTERNAL_ERROR, KVM_MP_STATE_RUNNABLE};
use kvm_ioctls::{VcpuExit as KvmExit, VcpuFd};
use vm_memory::GuestMemory;

use crate::{x86, CpuMode, Error, ExitReason, ExitStats, IoAccess, IoAction, IoHandler, IoKind};
use crate::{SystemEventKind, VcpuExit};

/// A virtual CPU: its KVM file descriptor, its id and its exit counters.
///
/// A `Vcpu` is run by one thread at a time ([`Vcpu::run`] takes `&mut self`); move it to
/// its own thread with [`VcpuThread`](crate::VcpuThread) to get kick, pause and resume.
#[derive(Debug)]
pub struct Vcpu {
    fd: VcpuFd,
    id: u32,
    stats: Arc<ExitStats>,
    in_kernel_apic: bool,
}

impl Vcpu {
    pub(crate) fn new(fd: VcpuFd, id: u32, in_kernel_apic: bool) -> Self {
        Vcpu {
            fd,
            id,
            stats: Arc::new(ExitStats::default()),
            in_kernel_apic,
        }
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
        x86::enter(&self.fd, memory, mode, entry, stack_top)?;
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
            KvmExit::IoOut(port, data) => {
                let action = handler.pio_write(port, data);
                let access = access(IoKind::PioWrite, u64::from(port), data.len());
                (ExitReason::PioWrite, Ok(io_exit(action, access)))
            }
            KvmExit::IoIn(port, data) => {
                let action = handler.pio_read(port, data);
                let access = access(IoKind::PioRead, u64::from(port), data.len());
                (ExitReason::PioRead, Ok(io_exit(action, access)))
            }
            KvmExit::MmioWrite(addr, data) => {
                let action = handler.mmio_write(addr, data);
                let access = access(IoKind::MmioWrite, addr, data.len());
                (ExitReason::MmioWrite, Ok(io_exit(action, access)))
            }
            KvmExit::MmioRead(addr, data) => {
                let action = handler.mmio_read(addr, data);
                let access = access(IoKind::MmioRead, addr, data.len());
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

    /// The kvm-ioctls handle, mutably, to run the vCPU without kvmkit's loop (as the
    /// exit-latency baseline does). Exits taken that way are not counted in
    /// [`stats`](Self::stats).
    pub fn fd_mut(&mut self) -> &mut VcpuFd {
        &mut self.fd
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
fn access(kind: IoKind, addr: u64, len: usize) -> IoAccess {
    IoAccess { kind, addr, len }
}

#[inline]
fn io_exit(action: IoAction, access: IoAccess) -> VcpuExit {
    match action {
        IoAction::Continue => VcpuExit::Io(access),
        IoAction::Stop => VcpuExit::IoStop(access),
    }
}
