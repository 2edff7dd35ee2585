// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

#![deny(missing_docs)]
//! What one VM exit costs on this host, through kvmkit and through a bare
//! kvm-ioctls loop.
//!
//! Each [`ExitClass`] has a tiny long-mode guest that causes that exit over and over.
//! A [`LatencyVm`] runs it either through [`Vcpu::run_once`] with an [`IoHandler`]
//! (kvmkit's path: typed exit, handler dispatch, exit counting) or through a minimal
//! `match` on [`kvm_ioctls::VcpuFd::run`] (the baseline). The baseline drives its own
//! kvm-ioctls VM and vCPU over the same guest memory and program, from the same
//! thread, so their ratio is kvmkit's overhead per exit.
//!
//! This crate is the measuring instrument of the `exit_latency` example and benchmark;
//! it is not published, and the `kvmkit` library does not depend on it.
//!
//! Two more classes take the full device path on kvmkit's side: [`PlatformIo`], a
//! [`Bus`] lookup and a device that ignores the access, against the same bare loop;
//! their ratio is what the device stack adds to an exit.
//!
//! Two classes never reach userspace: a write to a port with an ioeventfd, and
//! `cpuid`, which KVM answers in the kernel. Their guests run a batch of `n` such
//! exits between two port reads that fetch the batch size; the cost per exit is the
//! batch's time over `n`, with the one userspace exit per batch spread across it.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuExit as KvmExit, VcpuFd, VmFd};
use kvmkit::PlatformIo;
use kvmkit_devices::{AddressSpace, Bus, BusDevice, VmShutdown};
use kvmkit_guest_asm::{asm::*, GuestProgram};
use kvmkit_memory::{GuestRam, MemoryConfig, MemoryLayout};
use kvmkit_vcpu::{
    CpuMode, EventFd, ExitCounts, Hypervisor, IoAccess, IoAction, IoEventAddress, IoHandler,
    IoKind, NoDatamatch, Vcpu, VcpuExit, Vm,
};

/// Where the latency guests are loaded.
const CODE_ADDR: u64 = 0x10_0000;
const STACK_TOP: u64 = 0x8_0000;
/// The port the userspace port classes use (the POST code port: nothing lives there).
const EXIT_PORT: u16 = 0x80;
/// The port an ioeventfd is registered on.
const IOEVENTFD_PORT: u16 = 0x88;
/// A virtio-mmio queue notify register (in its window above MMIO_ADDR), with an
/// ioeventfd matching queue 0 as kvmkit's platform registers it.
const VIRTIO_NOTIFY_ADDR: u64 = MMIO_ADDR + 0x1000 + kvmkit_virtio::QUEUE_NOTIFY;
/// The port the in-kernel classes read their batch size from.
const BATCH_PORT: u16 = 0x8a;
/// An address in the 32-bit MMIO hole.
const MMIO_ADDR: u64 = 0xd000_0000;
/// Exits run before any measurement, to fault in guest pages and warm caches.
const WARMUP_EXITS: u64 = 1000;

/// A kind of VM exit whose round trip is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitClass {
    /// `out` to a port, handled in userspace.
    PioWrite,
    /// `in` from a port, handled in userspace.
    PioRead,
    /// A store to an MMIO address, handled in userspace.
    MmioWrite,
    /// A load from an MMIO address, handled in userspace.
    MmioRead,
    /// `hlt` without an in-kernel local APIC, which returns to userspace.
    Hlt,
    /// `out` to a port with an ioeventfd: KVM signals the eventfd in the kernel.
    Ioeventfd,
    /// A virtio queue notification: a 32-bit MMIO write of the queue index to the
    /// notify register, which an ioeventfd with that datamatch takes in the kernel.
    VirtioNotify,
    /// `cpuid`: KVM answers in the kernel and re-enters the guest.
    CpuidInKernel,
    /// `out` to a port, through the device stack: [`PlatformIo`] and a port [`Bus`]
    /// to a device that ignores the write.
    PioWriteDevice,
    /// A store to an MMIO address, through [`PlatformIo`] and an MMIO [`Bus`].
    MmioWriteDevice,
}

impl ExitClass {
    /// Every class, in the order tables print them.
    pub const ALL: [ExitClass; 10] = [
        ExitClass::PioWrite,
        ExitClass::PioRead,
        ExitClass::MmioWrite,
        ExitClass::MmioRead,
        ExitClass::Hlt,
        ExitClass::Ioeventfd,
        ExitClass::VirtioNotify,
        ExitClass::CpuidInKernel,
        ExitClass::PioWriteDevice,
        ExitClass::MmioWriteDevice,
    ];

    /// The name tables and benchmarks use.
    pub fn name(self) -> &'static str {
        match self {
            ExitClass::PioWrite => "pio_write",
            ExitClass::PioRead => "pio_read",
            ExitClass::MmioWrite => "mmio_write",
            ExitClass::MmioRead => "mmio_read",
            ExitClass::Hlt => "hlt",
            ExitClass::Ioeventfd => "ioeventfd",
            ExitClass::VirtioNotify => "virtio_notify",
            ExitClass::CpuidInKernel => "cpuid_in_kernel",
            ExitClass::PioWriteDevice => "pio_write_device",
            ExitClass::MmioWriteDevice => "mmio_write_device",
        }
    }

    /// Whether the exit is handled in the kernel, never reaching userspace.
    pub fn in_kernel(self) -> bool {
        matches!(
            self,
            ExitClass::Ioeventfd | ExitClass::VirtioNotify | ExitClass::CpuidInKernel
        )
    }

    /// Whether kvmkit's side goes through the device buses.
    pub fn through_devices(self) -> bool {
        matches!(self, ExitClass::PioWriteDevice | ExitClass::MmioWriteDevice)
    }

    /// The guest that causes this exit forever.
    fn program(self) -> GuestProgram {
        let assembled = GuestProgram::assemble(CpuMode::Long, CODE_ADDR, |a| {
            let mut top = a.create_label();
            match self {
                ExitClass::PioWrite | ExitClass::PioRead | ExitClass::PioWriteDevice => {
                    a.mov(dx, u32::from(EXIT_PORT))?
                }
                ExitClass::MmioWrite | ExitClass::MmioRead | ExitClass::MmioWriteDevice => {
                    a.mov(rdi, MMIO_ADDR)?
                }
                _ => {}
            }
            a.set_label(&mut top)?;
            match self {
                ExitClass::PioWrite | ExitClass::PioWriteDevice => a.out(dx, al)?,
                ExitClass::PioRead => a.in_(al, dx)?,
                ExitClass::MmioWrite | ExitClass::MmioWriteDevice => a.mov(byte_ptr(rdi), al)?,
                ExitClass::MmioRead => a.mov(al, byte_ptr(rdi))?,
                ExitClass::Hlt => a.hlt()?,
                ExitClass::Ioeventfd => in_kernel_batch(a, |a| {
                    a.mov(dx, u32::from(IOEVENTFD_PORT))?;
                    a.out(dx, al)
                })?,
                ExitClass::VirtioNotify => in_kernel_batch(a, |a| {
                    a.mov(rdi, VIRTIO_NOTIFY_ADDR)?;
                    a.mov(dword_ptr(rdi), 0u32)
                })?,
                ExitClass::CpuidInKernel => in_kernel_batch(a, |a| {
                    a.xor(eax, eax)?;
                    a.cpuid()
                })?,
            }
            a.jmp(top)
        });
        // The programs are fixed; failing to assemble one is a bug in this file.
        assembled.expect("exit-latency guest programs assemble")
    }
}

impl fmt::Display for ExitClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Emits: read the batch size from `BATCH_PORT` into esi, then run `exit` esi times.
fn in_kernel_batch(
    a: &mut CodeAssembler,
    exit: impl Fn(&mut CodeAssembler) -> Result<(), IcedError>,
) -> Result<(), IcedError> {
    let mut inner = a.create_label();
    a.mov(dx, u32::from(BATCH_PORT))?;
    a.in_(eax, dx)?;
    a.mov(esi, eax)?;
    a.set_label(&mut inner)?;
    exit(a)?;
    a.dec(esi)?;
    a.jnz(inner)
}

/// What can go wrong while measuring.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Setting up the VM failed.
    #[error(transparent)]
    Machine(#[from] kvmkit::Error),
    /// Setting up the baseline's own VM failed.
    #[error("baseline VM: {op} failed")]
    Baseline {
        /// The kvm-ioctls call.
        op: &'static str,
        /// Its error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The guest made an exit its class should not make.
    #[error("{class}: unexpected exit {exit}")]
    UnexpectedExit {
        /// The class being measured.
        class: ExitClass,
        /// What happened instead.
        exit: String,
    },
    /// The host does not handle this class the way it is measured (e.g. it sends an
    /// in-kernel class to userspace).
    #[error("{class} is not measurable on this host: {reason}")]
    Unsupported {
        /// The class.
        class: ExitClass,
        /// Why.
        reason: String,
    },
}

impl From<kvmkit_vcpu::Error> for Error {
    fn from(error: kvmkit_vcpu::Error) -> Self {
        Error::Machine(error.into())
    }
}

impl From<kvmkit_devices::BusError> for Error {
    fn from(error: kvmkit_devices::BusError) -> Self {
        Error::Machine(error.into())
    }
}

fn host_error(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Machine(kvmkit::Error::Host { what, source })
}

fn baseline_error(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
    move |source| Error::Baseline { op, source }
}

impl From<kvmkit_memory::Error> for Error {
    fn from(error: kvmkit_memory::Error) -> Self {
        Error::Machine(error.into())
    }
}

/// kvmkit's side: the least work a device could do per access.
#[derive(Debug)]
struct LatencyHandler {
    /// The batch size the next `BATCH_PORT` read returns; reset to 1 once read.
    next_batch: AtomicU64,
}

impl IoHandler for LatencyHandler {
    fn pio_read(&self, port: u16, data: &mut [u8]) -> IoAction {
        if port == BATCH_PORT {
            fill_batch(data, self.next_batch.swap(1, Ordering::Relaxed));
        } else {
            data.fill(0);
        }
        IoAction::Continue
    }

    fn pio_write(&self, _port: u16, _data: &[u8]) -> IoAction {
        IoAction::Continue
    }

    fn mmio_read(&self, _addr: u64, data: &mut [u8]) -> IoAction {
        data.fill(0);
        IoAction::Continue
    }

    fn mmio_write(&self, _addr: u64, _data: &[u8]) -> IoAction {
        IoAction::Continue
    }
}

/// Writes a batch size for the guest's 32-bit `in`: at least 1 (the guest's loop
/// counts down before testing) and at most `u32::MAX`.
fn fill_batch(data: &mut [u8], batch: u64) {
    let batch = u32::try_from(batch.max(1)).unwrap_or(u32::MAX);
    let bytes = batch.to_le_bytes();
    let len = data.len().min(4);
    data[..len].copy_from_slice(&bytes[..len]);
}

/// A device that ignores what it is given: the cheapest device behind a bus.
struct NullDevice;

impl BusDevice for NullDevice {
    fn read(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&self, _offset: u64, _data: &[u8]) {}
}

/// The device stack of a platform with a [`NullDevice`] where the guests exit.
fn null_device_platform() -> Result<PlatformIo, Error> {
    let pio = Arc::new(Bus::new(AddressSpace::Pio));
    let mmio = Arc::new(Bus::new(AddressSpace::Mmio));
    pio.insert(u64::from(EXIT_PORT), 1, "null", Arc::new(NullDevice))?;
    mmio.insert(MMIO_ADDR, 0x1000, "null", Arc::new(NullDevice))?;
    let exit = VmShutdown::new().map_err(host_error("cannot create an eventfd"))?;
    Ok(PlatformIo::new(pio, mmio, Arc::new(exit)))
}

/// The baseline's own VM: kvm-ioctls objects over the same guest memory, with nothing
/// of kvmkit's run loop.
#[derive(Debug)]
struct Baseline {
    // Declared before `_vm`; both are dropped before the `GuestRam` they map, which
    // `LatencyVm` declares after its `baseline` field.
    vcpu: VcpuFd,
    _vm: VmFd,
}

impl Baseline {
    fn new(ram: &GuestRam, ioeventfd: Option<(&EventFd, ExitClass)>) -> Result<Self, Error> {
        let kvm = Kvm::new().map_err(baseline_error("open /dev/kvm"))?;
        let vm = kvm.create_vm().map_err(baseline_error("KVM_CREATE_VM"))?;
        vm.set_tss_address(0xfffb_d000)
            .map_err(baseline_error("KVM_SET_TSS_ADDR"))?;
        for (slot, region) in (0u32..).zip(ram.regions()) {
            let memslot = kvm_userspace_memory_region {
                slot,
                flags: 0,
                guest_phys_addr: region.spec.guest_addr,
                memory_size: region.spec.size,
                userspace_addr: region.host_addr as u64,
            };
            // SAFETY: the region is a live mapping of `ram`, which the `LatencyVm`
            // holding this baseline drops only after the baseline's VM and vCPU.
            unsafe { vm.set_user_memory_region(memslot) }
                .map_err(baseline_error("KVM_SET_USER_MEMORY_REGION"))?;
        }
        if let Some((event, class)) = ioeventfd {
            let registered = match class {
                ExitClass::VirtioNotify => {
                    vm.register_ioevent(event, &IoEventAddress::Mmio(VIRTIO_NOTIFY_ADDR), 0u32)
                }
                _ => vm.register_ioevent(
                    event,
                    &IoEventAddress::Pio(u64::from(IOEVENTFD_PORT)),
                    NoDatamatch,
                ),
            };
            registered.map_err(baseline_error("KVM_IOEVENTFD"))?;
        }
        let vcpu = vm
            .create_vcpu(0)
            .map_err(baseline_error("KVM_CREATE_VCPU"))?;
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(baseline_error("KVM_GET_SUPPORTED_CPUID"))?;
        vcpu.set_cpuid2(&cpuid)
            .map_err(baseline_error("KVM_SET_CPUID2"))?;
        kvmkit_vcpu::x86::set_mode(&vcpu, ram.memory(), CpuMode::Long, CODE_ADDR, STACK_TOP)?;
        Ok(Baseline { vcpu, _vm: vm })
    }
}

/// A one-vCPU VM running the guest of one [`ExitClass`].
#[derive(Debug)]
pub struct LatencyVm {
    class: ExitClass,
    handler: LatencyHandler,
    /// For the classes that go through the device stack.
    platform: Option<PlatformIo>,
    /// The batch size the baseline's next `BATCH_PORT` read returns.
    baseline_next_batch: u64,
    vcpu: Vcpu,
    baseline: Baseline,
    ioeventfd: Option<EventFd>,
    _vm: Vm,
    _ram: GuestRam,
}

impl LatencyVm {
    /// Builds the VM for `class` and checks that the host handles it as the class
    /// says (in the kernel or in userspace).
    pub fn new(class: ExitClass) -> Result<Self, Error> {
        let hypervisor = Hypervisor::open()?;
        let ram = GuestRam::new(&MemoryLayout::x86_64(16 << 20)?, &MemoryConfig::default())?;
        let vm = Vm::new(&hypervisor)?;
        vm.register_memory(ram.shared_memory())?;
        let program = class.program();
        kvmkit::boot::load_program(
            ram.memory(),
            program.mode(),
            program.load_addr(),
            program.bytes(),
            1,
        )
        .map_err(kvmkit::Error::Boot)?;
        let ioeventfd = match class {
            ExitClass::Ioeventfd | ExitClass::VirtioNotify => {
                let event = EventFd::new(libc::EFD_NONBLOCK)
                    .map_err(host_error("cannot create an eventfd"))?;
                if class == ExitClass::VirtioNotify {
                    vm.register_ioeventfd(&event, IoEventAddress::Mmio(VIRTIO_NOTIFY_ADDR), 0u32)?;
                } else {
                    let port = IoEventAddress::Pio(u64::from(IOEVENTFD_PORT));
                    vm.register_ioeventfd(&event, port, NoDatamatch)?;
                }
                Some(event)
            }
            _ => None,
        };
        let vcpu = vm.create_vcpu(0)?;
        vcpu.enter_mode(ram.memory(), CpuMode::Long, CODE_ADDR, STACK_TOP)?;
        let baseline = Baseline::new(&ram, ioeventfd.as_ref().map(|event| (event, class)))?;
        let mut latency_vm = LatencyVm {
            class,
            handler: LatencyHandler {
                next_batch: AtomicU64::new(1),
            },
            baseline_next_batch: 1,
            platform: if class.through_devices() {
                Some(null_device_platform()?)
            } else {
                None
            },
            vcpu,
            baseline,
            ioeventfd,
            _vm: vm,
            _ram: ram,
        };
        latency_vm.check_class()?;
        latency_vm.run_kvmkit(WARMUP_EXITS)?;
        latency_vm.run_baseline(WARMUP_EXITS)?;
        Ok(latency_vm)
    }

    /// The class this VM measures.
    pub fn class(&self) -> ExitClass {
        self.class
    }

    /// The exits kvmkit's path has counted on this VM's vCPU (the baseline's are not
    /// counted).
    pub fn exit_counts(&self) -> ExitCounts {
        self.vcpu.stats().snapshot()
    }

    /// For an in-kernel class, runs one batch and checks that it took exactly one
    /// userspace exit and (for the ioeventfd) signalled the eventfd once per write.
    fn check_class(&mut self) -> Result<(), Error> {
        if !self.class.in_kernel() {
            return Ok(());
        }
        const PROBE: u64 = 8;
        // Leaves a batch of 1 fetched and the eventfd drained: the probe below then
        // runs 1 + PROBE in-kernel exits.
        self.run_kvmkit(1)?;
        if let Some(event) = &self.ioeventfd {
            let _ = event.read();
        }
        let before = self.vcpu.stats().snapshot().total();
        self.handler.next_batch.store(PROBE, Ordering::Relaxed);
        self.expect_batch_exit()?;
        self.expect_batch_exit()?;
        let user_exits = self.vcpu.stats().snapshot().total() - before;
        if user_exits != 2 {
            return Err(self.unsupported(format!(
                "a batch of {PROBE} took {} userspace exits instead of none",
                user_exits - 2
            )));
        }
        if let Some(event) = &self.ioeventfd {
            let signalled = event.read().unwrap_or(0);
            if signalled != PROBE + 1 {
                return Err(self.unsupported(format!(
                    "the eventfd was signalled {signalled} times for {} writes",
                    PROBE + 1
                )));
            }
        }
        Ok(())
    }

    fn unsupported(&self, reason: String) -> Error {
        Error::Unsupported {
            class: self.class,
            reason,
        }
    }

    fn expect_batch_exit(&mut self) -> Result<(), Error> {
        match self.vcpu.run_once(&self.handler)? {
            VcpuExit::Io(IoAccess {
                kind: IoKind::PioRead,
                addr,
                ..
            }) if addr == u64::from(BATCH_PORT) => Ok(()),
            other => Err(self.unsupported(format!("the batch ended in {other:?}"))),
        }
    }

    /// Runs `exits` exits through kvmkit's [`Vcpu::run_once`] and returns the time.
    pub fn run_kvmkit(&mut self, exits: u64) -> Result<Duration, Error> {
        self.handler
            .next_batch
            .store(exits.max(1), Ordering::Relaxed);
        self.time_exits(exits, Self::run_kvmkit_exit)
    }

    #[inline]
    fn run_kvmkit_exit(&mut self) -> Result<(), Error> {
        let exit = match &self.platform {
            Some(platform) => self.vcpu.run_once(platform)?,
            None => self.vcpu.run_once(&self.handler)?,
        };
        match exit {
            VcpuExit::Io(_) | VcpuExit::Hlt => Ok(()),
            other => Err(Error::UnexpectedExit {
                class: self.class,
                exit: format!("{other:?}"),
            }),
        }
    }

    /// Runs `exits` exits through a bare `match` on kvm-ioctls' `VcpuFd::run` and
    /// returns the time.
    pub fn run_baseline(&mut self, exits: u64) -> Result<Duration, Error> {
        self.baseline_next_batch = exits.max(1);
        self.time_exits(exits, Self::run_baseline_exit)
    }

    /// Times `exits` exits taken one `run_exit` each; for an in-kernel class, the one
    /// `run_exit` that runs a batch of `exits` (whose size the caller has set for the
    /// next batch-size read).
    #[inline]
    fn time_exits(
        &mut self,
        exits: u64,
        run_exit: impl Fn(&mut Self) -> Result<(), Error>,
    ) -> Result<Duration, Error> {
        if self.class.in_kernel() {
            // This entry runs the batch fetched before; its exit fetches `exits`.
            run_exit(self)?;
            let start = Instant::now();
            run_exit(self)?;
            return Ok(start.elapsed());
        }
        let start = Instant::now();
        for _ in 0..exits {
            run_exit(self)?;
        }
        Ok(start.elapsed())
    }

    #[inline]
    fn run_baseline_exit(&mut self) -> Result<(), Error> {
        let class = self.class;
        let next_batch = &mut self.baseline_next_batch;
        match self.baseline.vcpu.run() {
            Ok(KvmExit::IoOut(..)) | Ok(KvmExit::MmioWrite(..)) | Ok(KvmExit::Hlt) => Ok(()),
            Ok(KvmExit::IoIn(port, data)) => {
                if port == BATCH_PORT {
                    fill_batch(data, std::mem::replace(next_batch, 1));
                } else {
                    data.fill(0);
                }
                Ok(())
            }
            Ok(KvmExit::MmioRead(_, data)) => {
                data.fill(0);
                Ok(())
            }
            other => Err(Error::UnexpectedExit {
                class,
                exit: format!("{other:?}"),
            }),
        }
    }
}

/// One row of the exit-latency table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyRow {
    /// The class measured.
    pub class: ExitClass,
    /// Median nanoseconds per exit through kvmkit.
    pub kvmkit_ns: f64,
    /// Median nanoseconds per exit through the bare kvm-ioctls loop.
    pub baseline_ns: f64,
    /// The median of the rounds' ratios (kvmkit's time over the baseline's in the
    /// same round, the two run back to back): 1.00 means no overhead.
    pub ratio: f64,
    /// The 95 % confidence interval of that median, distribution-free (the rounds'
    /// ratios ranked, the interval's ends at the ranks the binomial law gives).
    pub ratio_ci: (f64, f64),
    /// Rounds measured.
    pub rounds: usize,
}

impl LatencyRow {
    /// Half the confidence interval's width: the ratio is known to about ± this.
    pub fn resolution(&self) -> f64 {
        (self.ratio_ci.1 - self.ratio_ci.0) / 2.0
    }
}

impl fmt::Display for LatencyRow {
    /// `class kvmkit_ns baseline_ns ratio ci95 rounds`, aligned for a table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<18} {:>10.0} {:>11.0} {:>6.3} {:>5.3}-{:<5.3} {:>6}",
            self.class.name(),
            self.kvmkit_ns,
            self.baseline_ns,
            self.ratio,
            self.ratio_ci.0,
            self.ratio_ci.1,
            self.rounds
        )
    }
}

/// The header line matching [`LatencyRow`]'s display.
pub const TABLE_HEADER: &str =
    "class                kvmkit_ns baseline_ns  ratio ratio_ci95  rounds";

/// How many rounds a measurement takes: at least `min_rounds`, then more until the
/// ratio's confidence interval is at most ± `resolution` wide or `max_rounds` ran.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rounds {
    /// Rounds always run.
    pub min_rounds: usize,
    /// Rounds never exceeded.
    pub max_rounds: usize,
    /// The half-width of the ratio's 95 % confidence interval to reach.
    pub resolution: f64,
}

impl Rounds {
    /// Exactly `rounds` rounds.
    pub fn fixed(rounds: usize) -> Self {
        Rounds {
            min_rounds: rounds,
            max_rounds: rounds,
            resolution: f64::INFINITY,
        }
    }
}

/// Measures `class`: `rounds` rounds of `exits` exits, alternating kvmkit and the
/// baseline (which goes first alternates too), and returns the median of each.
pub fn measure(class: ExitClass, exits: u64, rounds: usize) -> Result<LatencyRow, Error> {
    measure_rounds(class, exits, Rounds::fixed(rounds))
}

/// Measures `class` in rounds of `exits` exits (kvmkit and the baseline back to back
/// in each, which goes first alternating) until `rounds` is satisfied.
pub fn measure_rounds(class: ExitClass, exits: u64, rounds: Rounds) -> Result<LatencyRow, Error> {
    let mut vm = LatencyVm::new(class)?;
    let exits = exits.max(1);
    let min_rounds = rounds.min_rounds.max(1);
    let max_rounds = rounds.max_rounds.max(min_rounds);
    let mut kvmkit = Vec::with_capacity(min_rounds);
    let mut baseline = Vec::with_capacity(min_rounds);
    let mut ratios = Vec::with_capacity(min_rounds);
    let per_exit = |d: Duration| d.as_nanos() as f64 / exits as f64;
    loop {
        let round = ratios.len();
        let (k, b) = if round % 2 == 0 {
            let k = per_exit(vm.run_kvmkit(exits)?);
            (k, per_exit(vm.run_baseline(exits)?))
        } else {
            let b = per_exit(vm.run_baseline(exits)?);
            (per_exit(vm.run_kvmkit(exits)?), b)
        };
        kvmkit.push(k);
        baseline.push(b);
        ratios.push(k / b);
        let done = ratios.len() >= max_rounds
            || (ratios.len() >= min_rounds && {
                let (low, high) = median_ci(&mut ratios.clone());
                (high - low) / 2.0 <= rounds.resolution
            });
        if done {
            break;
        }
    }
    Ok(LatencyRow {
        class,
        kvmkit_ns: median(&mut kvmkit),
        baseline_ns: median(&mut baseline),
        ratio: median(&mut ratios.clone()),
        ratio_ci: median_ci(&mut ratios),
        rounds: ratios.len(),
    })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 0 {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

/// The 95 % confidence interval of the median of `values`, without assuming their
/// distribution: ranked, the interval runs from rank n/2 − 1.96·√n/2 to
/// n/2 + 1.96·√n/2 (the normal approximation of the binomial law), clamped to the
/// sample. With few values it is the whole sample's range.
fn median_ci(values: &mut [f64]) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let half = 1.96 * (n as f64).sqrt() / 2.0;
    let centre = n as f64 / 2.0;
    // 1-based ranks, rounded outwards; float-to-integer casts saturate (a negative
    // rank becomes 0), and the clamps keep both inside the sample.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let (low, high) = (
        ((centre - half).floor() as usize).clamp(1, n),
        ((centre + half).ceil() as usize + 1).clamp(1, n),
    );
    (values[low - 1], values[high - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn the_medians_interval_narrows_as_rounds_grow_and_holds_the_median() {
        // Ratios spread evenly over 0.95..1.05: the median is 1.00.
        let spread = |n: usize| -> Vec<f64> {
            (0..n)
                .map(|i| 0.95 + 0.1 * i as f64 / (n - 1) as f64)
                .collect()
        };

        let few = median_ci(&mut spread(5));
        let many = median_ci(&mut spread(101));
        let lots = median_ci(&mut spread(1001));

        assert_eq!(few, (0.95, 1.05), "five rounds say nothing narrower");
        assert!(many.0 < 1.0 && many.1 > 1.0, "{many:?}");
        assert!(lots.0 > many.0 && lots.1 < many.1, "{lots:?} vs {many:?}");
        // ±1.96·√n/2 ranks of n over a spread of 0.1: about ±0.1/√n.
        assert!((lots.1 - lots.0) / 2.0 < 0.005, "{lots:?}");
        assert!((many.1 - many.0) / 2.0 > 0.008, "{many:?}");
    }

    #[test]
    fn device_classes_reach_a_mapped_device_on_both_buses() {
        let platform = null_device_platform().unwrap();

        platform.pio_write(EXIT_PORT, &[1]);
        platform.mmio_write(MMIO_ADDR, &[1]);

        assert_eq!(platform.pio_bus().unmapped_accesses(), (0, 0));
        assert_eq!(platform.mmio_bus().unmapped_accesses(), (0, 0));
    }

    #[test]
    fn every_class_guest_assembles_in_long_mode() {
        for class in ExitClass::ALL {
            let program = class.program();
            assert_eq!(program.mode(), CpuMode::Long, "{class}");
            assert!(!program.bytes().is_empty(), "{class}");
        }
    }
}
