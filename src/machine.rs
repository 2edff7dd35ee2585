// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A small VM builder: guest memory, a VM, vCPUs, a program, threads.

use std::path::PathBuf;
use std::sync::Arc;

use kvmkit_boot::{BootEntry, BootImage, EntryProtocol, PhysicalLayout};
use kvmkit_memory::x86::PAGE_TABLES;
use kvmkit_memory::{GuestRam, MemoryConfig, MemoryLayout};
use kvmkit_vcpu::{
    CpuMode, DirtyBitmap, EventFd, Hypervisor, IoHandler, MemslotOptions, StartHook, Vcpu,
    VcpuHandle, VcpuOutcome, VcpuThread, VcpuThreadConfig, Vm, MAX_MEMSLOT_SIZE,
};

use crate::reboot::{RebootPlan, Rebootable, Reload};
use crate::timeline::{Milestone, Timeline};
use crate::{Error, PlatformDevices};

/// Builds a [`Machine`].
#[derive(Debug, Clone)]
pub struct MachineBuilder {
    /// `None` once a size overflowed: `build` reports it.
    memory_size: Option<u64>,
    vcpus: u32,
    memory_config: MemoryConfig,
    irqchip: bool,
    kvm_path: PathBuf,
    pin_vcpus: bool,
    log_dirty: bool,
    memory_image: Option<Arc<std::fs::File>>,
    timeline: Option<Arc<Timeline>>,
}

impl Default for MachineBuilder {
    fn default() -> Self {
        MachineBuilder {
            memory_size: Some(64 << 20),
            vcpus: 1,
            memory_config: MemoryConfig::default(),
            irqchip: false,
            kvm_path: PathBuf::from(Hypervisor::DEFAULT_PATH),
            pin_vcpus: false,
            log_dirty: false,
            memory_image: None,
            timeline: None,
        }
    }
}

impl MachineBuilder {
    /// A machine with 64 MiB of RAM, one vCPU and no in-kernel irqchip.
    pub fn new() -> Self {
        Self::default()
    }

    /// Guest RAM in MiB. A size past 2^64 bytes makes [`build`](Self::build) fail.
    pub fn memory_mib(mut self, mib: u64) -> Self {
        self.memory_size = mib.checked_mul(1 << 20);
        self
    }

    /// How guest RAM is backed; a `size` in it sets the memory size too.
    pub fn memory_config(mut self, config: MemoryConfig) -> Self {
        if let Some(size) = config.size {
            self.memory_size = Some(size);
        }
        self.memory_config = config;
        self
    }

    /// Number of vCPUs.
    pub fn vcpus(mut self, count: u32) -> Self {
        self.vcpus = count;
        self
    }

    /// Create the in-kernel PIC, IOAPIC, local APICs and PIT.
    pub fn irqchip(mut self, enabled: bool) -> Self {
        self.irqchip = enabled;
        self
    }

    /// Pin vCPU `i` to host CPU `i` modulo the number of host CPUs.
    pub fn pin_vcpus(mut self, enabled: bool) -> Self {
        self.pin_vcpus = enabled;
        self
    }

    /// Log the pages the guest writes (`KVM_MEM_LOG_DIRTY_PAGES`), for
    /// [`RunningMachine::dirty_pages`].
    pub fn log_dirty_pages(mut self, enabled: bool) -> Self {
        self.log_dirty = enabled;
        self
    }

    /// Opens the KVM device at `path` instead of `/dev/kvm`.
    pub fn kvm_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.kvm_path = path.into();
        self
    }

    /// Guest RAM starts as a private copy-on-write mapping of `image` (the layout's
    /// regions one after another, as a snapshot's memory file holds them: see
    /// [`Snapshot::memory_image`](crate::Snapshot::memory_image)), read page by page as
    /// the guest touches it, so that a restore costs neither the image's size nor guest
    /// RAM's. Only the default private anonymous memory maps so; with hugepages or
    /// shared memory, RAM starts empty and [`Machine::restore`] copies the snapshot in,
    /// so hugepages stay hugepages.
    pub fn memory_image(mut self, image: std::fs::File) -> Self {
        self.memory_image = Some(Arc::new(image));
        self
    }

    /// The machine marks its start on `timeline` (see [`Machine::timeline`]), whose
    /// origin the caller chose (its process's start, say). Without one, the machine
    /// makes a timeline whose origin is the call to [`build`](Self::build).
    pub fn timeline(mut self, timeline: Arc<Timeline>) -> Self {
        self.timeline = Some(timeline);
        self
    }

    /// Opens KVM, maps guest RAM, creates the VM and its vCPUs.
    pub fn build(self) -> Result<Machine, Error> {
        let timeline = self.timeline.clone().unwrap_or_else(Timeline::new);
        if self.vcpus == 0 {
            return Err(Error::NoVcpus);
        }
        let memory_size = self.memory_size.ok_or(Error::MemorySizeOverflow)?;
        let hypervisor = Hypervisor::open_at(&self.kvm_path)?;
        let max = hypervisor.max_vcpus();
        if self.vcpus as usize > max {
            return Err(Error::TooManyVcpus {
                asked: self.vcpus,
                max,
            });
        }
        let layout = MemoryLayout::x86_64(memory_size)?;
        // Before anything is mapped: KVM would refuse the slot only after the mapping
        // and its dirty bitmap were made.
        if let Some(region) = layout.regions().iter().find(|r| r.size > MAX_MEMSLOT_SIZE) {
            return Err(Error::MemslotTooLarge {
                size: region.size,
                max: MAX_MEMSLOT_SIZE,
            });
        }
        let ram = self.map_ram(&layout)?;
        let vm = Arc::new(Vm::new(&hypervisor)?);
        let options = if self.log_dirty {
            MemslotOptions::default().logging_dirty_pages()
        } else {
            MemslotOptions::default()
        };
        vm.register_memory_with(ram.shared_memory(), options)?;
        if self.irqchip {
            vm.create_irqchip()?;
            vm.create_pit()?;
        }
        let vcpus = vm.create_vcpus(self.vcpus)?;
        timeline.mark(Milestone::MemoryMapped);
        timeline.watch_vcpus(vcpus.iter().map(|vcpu| Arc::clone(vcpu.stats())));
        Ok(Machine {
            hypervisor,
            vm,
            ram,
            vcpus,
            pin_vcpus: self.pin_vcpus,
            timeline,
        })
    }

    /// Guest RAM: mapped from the image where the backing allows, else empty.
    fn map_ram(&self, layout: &MemoryLayout) -> Result<GuestRam, Error> {
        let Some(image) = &self.memory_image else {
            return Ok(GuestRam::new(layout, &self.memory_config)?);
        };
        match GuestRam::from_image(layout, &self.memory_config, image) {
            // Hugepages or shared memory: filled by copying.
            Err(kvmkit_memory::Error::ImageBacking { .. }) => {
                Ok(GuestRam::new(layout, &self.memory_config)?)
            }
            other => Ok(other?),
        }
    }
}

/// Guest memory, a VM and its vCPUs, not yet running anything.
#[derive(Debug)]
pub struct Machine {
    hypervisor: Hypervisor,
    vm: Arc<Vm>,
    ram: GuestRam,
    vcpus: Vec<Vcpu>,
    pin_vcpus: bool,
    timeline: Arc<Timeline>,
}

impl Machine {
    /// The open KVM device.
    pub fn hypervisor(&self) -> &Hypervisor {
        &self.hypervisor
    }

    /// The VM, for ioeventfds, irqfds and more memory.
    pub fn vm(&self) -> &Arc<Vm> {
        &self.vm
    }

    /// Guest RAM.
    pub fn ram(&self) -> &GuestRam {
        &self.ram
    }

    /// The vCPUs, for register access before they start.
    pub fn vcpus(&self) -> &[Vcpu] {
        &self.vcpus
    }

    /// When this machine got where as it started: memory mapped, kernel loaded or
    /// state restored, and, once it runs on a platform, the first `KVM_RUN`, the first
    /// console byte and the guest's own "boot complete". Keep the `Arc` to read it
    /// while and after the VM runs.
    pub fn timeline(&self) -> &Arc<Timeline> {
        &self.timeline
    }

    /// The guest-physical address map of this machine's RAM, without devices.
    pub fn layout(&self) -> Result<PhysicalLayout, Error> {
        let ram: Vec<(u64, u64)> = self
            .ram
            .regions()
            .iter()
            .map(|region| (region.spec.guest_addr, region.spec.size))
            .collect();
        Ok(PhysicalLayout::new(&ram)?)
    }

    /// Loads `image` (a program, or a Linux kernel) into guest RAM and sets the vCPUs
    /// up to enter it, on a machine with no devices to describe to the guest. See
    /// [`boot_on`](Self::boot_on).
    pub fn boot(self, image: &impl BootImage) -> Result<BootedMachine, Error> {
        let layout = self.layout()?;
        self.boot_in(image, &layout)
    }

    /// Puts the VM `snapshot` saved (its guest RAM from the memory file in `dir`) into
    /// this machine, built as the saved one was (same vCPUs, RAM, irqchip), instead of
    /// booting an image: it then runs from where the saved VM was paused. Restore the
    /// platform's devices too ([`Platform::restore_devices`](crate::Platform::restore_devices)).
    pub fn restore(
        self,
        snapshot: &crate::Snapshot,
        dir: &std::path::Path,
    ) -> Result<BootedMachine, Error> {
        use crate::SnapshotError;
        if snapshot.vcpu_count() != self.vcpus.len() {
            return Err(SnapshotError::Mismatch {
                what: "vCPU count",
                saved: snapshot.vcpu_count().to_string(),
                here: self.vcpus.len().to_string(),
            }
            .into());
        }
        snapshot.restore_memory(dir, &self.ram)?;
        // A new generation: each VM restored from one snapshot is another VM to a
        // guest that reads it (and reseeds its random numbers).
        new_generation_id(&self.ram, kvmkit_memory::x86::VM_GENERATION_ID.start)?;
        self.vm
            .restore_state(snapshot.vm())
            .map_err(SnapshotError::Kvm)?;
        for (vcpu, state) in self.vcpus.iter().zip(snapshot.vcpus()) {
            vcpu.restore_state(state).map_err(SnapshotError::Kvm)?;
        }
        self.timeline.mark(Milestone::StateRestored);
        Ok(BootedMachine {
            machine: self,
            start_paused: false,
            rebootable: None,
        })
    }

    /// Loads `image` with a platform's `devices` in the address map (a kernel finds
    /// them in the ACPI tables; [`Platform::devices`](crate::Platform::devices) gives
    /// them), and sets the vCPUs up to enter it:
    ///
    /// - a program: every vCPU, in the program's mode, vCPU n with n in `RDI` and its
    ///   own stack below the program (which must leave the long-mode page tables room
    ///   below the stacks);
    /// - a Linux kernel: the boot vCPU in long mode with `RSI` at the zero page (or,
    ///   for PVH, in protected mode with `EBX` at the start info); the others wait for
    ///   the kernel's INIT and startup IPIs, which needs the in-kernel irqchip.
    pub fn boot_on(
        self,
        image: &impl BootImage,
        devices: &PlatformDevices,
    ) -> Result<BootedMachine, Error> {
        let mut layout = self.layout()?;
        devices.describe_in(&mut layout)?;
        self.boot_in(image, &layout)
    }

    /// As [`boot_on`](Self::boot_on), keeping `image` so that the VM can reboot in
    /// place ([`VmControl::reboot`](crate::VmControl::reboot)): it is loaded again then,
    /// from its files as they are at that time, on the same layout.
    pub fn boot_rebootable_on<I>(
        self,
        image: I,
        devices: &PlatformDevices,
    ) -> Result<BootedMachine, Error>
    where
        I: BootImage + Send + 'static,
    {
        let mut layout = self.layout()?;
        devices.describe_in(&mut layout)?;
        let vcpus = u32::try_from(self.vcpus.len()).unwrap_or(u32::MAX);
        let mut booted = self.boot_in(&image, &layout)?;
        let reload: Reload = Box::new(move |memory| Ok(image.load(memory, &layout, vcpus)?));
        booted.rebootable = Some(Rebootable { reload });
        Ok(booted)
    }

    fn boot_in(
        self,
        image: &impl BootImage,
        layout: &PhysicalLayout,
    ) -> Result<BootedMachine, Error> {
        // The builder made at most u32::MAX vCPUs.
        let vcpus = u32::try_from(self.vcpus.len()).unwrap_or(u32::MAX);
        let entry = image.load(self.ram.memory(), layout, vcpus)?;
        if let Some(addr) = layout.legacy_devices().vm_generation_id {
            new_generation_id(&self.ram, addr)?;
        }
        match entry.protocol {
            EntryProtocol::Program { mode, stack_stride } => {
                self.enter_program(&entry, mode, stack_stride)?
            }
            EntryProtocol::Linux64 { zero_page } => {
                let mut regs = self.enter_kernel(CpuMode::Long, &entry)?;
                regs.rsi = zero_page;
                self.vcpus[0].set_regs(&regs)?;
            }
            EntryProtocol::Pvh { start_info } => {
                let mut regs = self.enter_kernel(CpuMode::Protected, &entry)?;
                regs.rbx = start_info;
                self.vcpus[0].set_regs(&regs)?;
            }
            _ => return Err(Error::UnknownEntryProtocol),
        }
        self.timeline.mark(Milestone::KernelLoaded);
        Ok(BootedMachine {
            machine: self,
            start_paused: false,
            rebootable: None,
        })
    }

    fn enter_program(&self, entry: &BootEntry, mode: CpuMode, stride: u64) -> Result<(), Error> {
        let stacks = self.vcpus.len() as u64 * stride;
        let stack_base = entry
            .stack_top
            .checked_sub(stacks)
            .ok_or(Error::NoRoomForStacks {
                stacks,
                stack_top: entry.stack_top,
            })?;
        if mode == CpuMode::Long && stack_base < PAGE_TABLES.end() {
            return Err(Error::ProgramOverlapsPageTables {
                load_addr: entry.entry,
                min_load_addr: PAGE_TABLES.end() + stacks,
                vcpus: self.vcpus.len(),
            });
        }
        for (index, vcpu) in self.vcpus.iter().enumerate() {
            let stack_top = entry.stack_top - index as u64 * stride;
            vcpu.enter_mode(self.ram.memory(), mode, entry.entry, stack_top)?;
            let mut regs = vcpu.regs()?;
            regs.rdi = index as u64;
            vcpu.set_regs(&regs)?;
        }
        Ok(())
    }

    /// Puts the boot vCPU into `mode` at the kernel's entry and returns its registers;
    /// the other vCPUs stay waiting for the kernel's startup IPIs.
    fn enter_kernel(
        &self,
        mode: CpuMode,
        entry: &BootEntry,
    ) -> Result<kvm_bindings::kvm_regs, Error> {
        if self.vcpus.len() > 1 && !self.vm.has_irqchip() {
            return Err(Error::KernelNeedsIrqchip {
                vcpus: self.vcpus.len(),
            });
        }
        let boot = &self.vcpus[0];
        boot.enter_mode(self.ram.memory(), mode, entry.entry, entry.stack_top)?;
        Ok(boot.regs()?)
    }
}

/// Writes a new random VM generation ID (16 bytes) at `addr` in guest RAM.
fn new_generation_id(ram: &GuestRam, addr: u64) -> Result<(), Error> {
    use std::io::Read;
    let mut id = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut id))
        .map_err(Error::host("cannot draw a VM generation ID"))?;
    vm_memory::Bytes::write_slice(ram.memory(), &id, vm_memory::GuestAddress(addr)).map_err(|e| {
        Error::Host {
            what: "cannot write the VM generation ID",
            source: std::io::Error::other(e.to_string()),
        }
    })
}

/// A machine whose vCPUs are set up to run a program.
#[derive(Debug)]
pub struct BootedMachine {
    machine: Machine,
    /// Its vCPUs start paused (a restored VM waiting for its resume).
    start_paused: bool,
    /// Its image, kept to reboot in place.
    rebootable: Option<Rebootable>,
}

impl BootedMachine {
    /// The machine.
    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// This machine, its vCPUs started paused: they run no guest instruction until
    /// resumed (with [`VmControl`](crate::VmControl) when run on a platform). A
    /// restored VM is started so, as Cloud Hypervisor's is, unless resumed at once.
    pub fn paused(mut self) -> Self {
        self.start_paused = true;
        self
    }

    /// Whether its vCPUs start paused.
    pub fn starts_paused(&self) -> bool {
        self.start_paused
    }

    /// How it can reboot in place, once it runs (its first state read now).
    pub(crate) fn reboot_plan(&mut self) -> Result<Option<RebootPlan>, Error> {
        self.rebootable
            .take()
            .map(|rebootable| RebootPlan::new(rebootable, &self.machine))
            .transpose()
    }

    /// Starts one thread per vCPU, each handing its I/O to `handler`.
    pub fn start<H>(self, handler: Arc<H>) -> Result<RunningMachine, Error>
    where
        H: IoHandler + Send + Sync + 'static + ?Sized,
    {
        self.start_notifying(handler, None)
    }

    /// As [`start`](Self::start), and each vCPU thread writes `exit_event` when it
    /// ends, so an event loop learns of it without polling.
    pub fn start_notifying<H>(
        self,
        handler: Arc<H>,
        exit_event: Option<Arc<EventFd>>,
    ) -> Result<RunningMachine, Error>
    where
        H: IoHandler + Send + Sync + 'static + ?Sized,
    {
        self.start_with(handler, exit_event, None)
    }

    /// As [`start_notifying`](Self::start_notifying), each vCPU thread running
    /// `on_start` on itself before its first `KVM_RUN` (to confine itself, say).
    pub fn start_with<H>(
        self,
        handler: Arc<H>,
        exit_event: Option<Arc<EventFd>>,
        on_start: Option<StartHook>,
    ) -> Result<RunningMachine, Error>
    where
        H: IoHandler + Send + Sync + 'static + ?Sized,
    {
        let start_paused = self.start_paused;
        let Machine {
            hypervisor,
            vm,
            ram,
            vcpus,
            pin_vcpus,
            timeline,
        } = self.machine;
        let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut handles = Vec::with_capacity(vcpus.len());
        for vcpu in vcpus {
            let mut config = VcpuThreadConfig::default();
            if start_paused {
                config = config.paused();
            }
            if let Some(event) = &exit_event {
                config = config.notifying(Arc::clone(event));
            }
            if pin_vcpus {
                config = config.pinned_to(vcpu.id() as usize % host_cpus);
            }
            if let Some(hook) = &on_start {
                config = config.on_start(hook.clone());
            }
            // A failure here drops the handles already started, which stops them.
            handles.push(VcpuThread::spawn(vcpu, Arc::clone(&handler), config)?);
        }
        Ok(RunningMachine {
            handles,
            vm,
            ram,
            timeline,
            _hypervisor: hypervisor,
        })
    }
}

/// A machine whose vCPU threads are running.
///
/// Dropping it first stops and joins every vCPU thread, then closes the VM, then
/// unmaps guest RAM: never the other way round.
#[derive(Debug)]
pub struct RunningMachine {
    // Fields drop in this order, after `Drop::drop` has joined the vCPU threads.
    handles: Vec<VcpuHandle>,
    vm: Arc<Vm>,
    ram: GuestRam,
    timeline: Arc<Timeline>,
    _hypervisor: Hypervisor,
}

impl Drop for RunningMachine {
    fn drop(&mut self) {
        self.stop();
        // Dropping a handle joins its thread; the outcomes are not wanted here.
        self.handles.clear();
    }
}

impl RunningMachine {
    /// The VM.
    pub fn vm(&self) -> &Arc<Vm> {
        &self.vm
    }

    /// Guest RAM.
    pub fn ram(&self) -> &GuestRam {
        &self.ram
    }

    /// When the machine got where as it started ([`Machine::timeline`]).
    pub fn timeline(&self) -> &Arc<Timeline> {
        &self.timeline
    }

    /// The pages of memslot `slot` (guest RAM region `slot`) written since the last
    /// call: those the guest wrote (KVM's dirty log) and those devices wrote (the
    /// memory's own bitmap). Needs [`MachineBuilder::log_dirty_pages`].
    pub fn dirty_pages(&self, slot: u32) -> Result<DirtyBitmap, Error> {
        let mut pages = self.vm.dirty_pages(slot)?;
        if let Some(written) = self.ram.take_written_pages(slot as usize) {
            pages.include(&written);
        }
        Ok(pages)
    }

    /// The vCPU threads, for kick, pause, resume, stop and exit counts.
    pub fn vcpus(&self) -> &[VcpuHandle] {
        &self.handles
    }

    /// Pauses every vCPU and returns once none executes guest code (each parked
    /// outside `KVM_RUN`, its state as it was). A VM's pause does this first, then
    /// pauses its devices ([`Platform::pause_devices`](crate::Platform::pause_devices)).
    pub fn pause(&self) {
        for handle in &self.handles {
            handle.pause();
        }
    }

    /// Lets every paused vCPU run again.
    pub fn resume(&self) {
        for handle in &self.handles {
            handle.resume();
        }
    }

    /// Asks every vCPU to stop.
    pub fn stop(&self) {
        for handle in &self.handles {
            handle.stop();
        }
    }

    /// Waits for every vCPU thread to end and returns how each ended, in vCPU order.
    /// If one failed, the others are stopped and its error is returned.
    pub fn wait(self) -> Result<Vec<VcpuOutcome>, Error> {
        let mut outcomes = Vec::with_capacity(self.handles.len());
        for result in self.join_all() {
            // Every thread has ended by now; the first failure is the answer.
            outcomes.push(result?);
        }
        Ok(outcomes)
    }

    /// Waits for every vCPU thread to end and returns how each ended or failed, in
    /// vCPU order. A failure stops the vCPUs not yet joined, so a vCPU that failed
    /// (or whose device panicked) never leaves the others running.
    pub fn join_all(mut self) -> Vec<Result<VcpuOutcome, kvmkit_vcpu::Error>> {
        let mut handles = std::mem::take(&mut self.handles).into_iter();
        let mut results = Vec::with_capacity(handles.len());
        while let Some(handle) = handles.next() {
            let result = handle.join();
            if result.is_err() {
                for waiting in handles.as_slice() {
                    waiting.stop();
                }
            }
            results.push(result);
        }
        results
    }
}
