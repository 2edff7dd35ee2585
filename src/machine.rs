// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A small VM builder: guest memory, a VM, vCPUs, a program, threads.

use std::path::PathBuf;
use std::sync::Arc;

use kvmkit_guest_asm::{Bitness, GuestProgram};
use kvmkit_memory::{GuestRam, MemoryConfig, MemoryLayout};
use kvmkit_vcpu::x86::PAGE_TABLES_END;
use kvmkit_vcpu::{
    CpuMode, EventFd, Hypervisor, IoHandler, Vcpu, VcpuHandle, VcpuOutcome, VcpuThread,
    VcpuThreadConfig, Vm,
};
use vm_memory::{Bytes, GuestAddress};

/// Bytes of stack each vCPU gets, below the program's load address.
const STACK_PER_VCPU: u64 = 0x1000;

/// What can go wrong while building or running a [`Machine`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Guest memory could not be laid out or mapped.
    #[error(transparent)]
    Memory(#[from] kvmkit_memory::Error),
    /// KVM refused an operation, or a vCPU failed.
    #[error(transparent)]
    Vcpu(#[from] kvmkit_vcpu::Error),
    /// The machine's configuration cannot work.
    #[error("invalid machine configuration: {0}")]
    Config(String),
}

/// Builds a [`Machine`].
#[derive(Debug, Clone)]
pub struct MachineBuilder {
    memory_size: u64,
    vcpus: u32,
    memory_config: MemoryConfig,
    irqchip: bool,
    kvm_path: PathBuf,
    pin_vcpus: bool,
}

impl Default for MachineBuilder {
    fn default() -> Self {
        MachineBuilder {
            memory_size: 64 << 20,
            vcpus: 1,
            memory_config: MemoryConfig::default(),
            irqchip: false,
            kvm_path: PathBuf::from(Hypervisor::DEFAULT_PATH),
            pin_vcpus: false,
        }
    }
}

impl MachineBuilder {
    /// A machine with 64 MiB of RAM, one vCPU and no in-kernel irqchip.
    pub fn new() -> Self {
        Self::default()
    }

    /// Guest RAM in MiB.
    pub fn memory_mib(mut self, mib: u64) -> Self {
        self.memory_size = mib << 20;
        self
    }

    /// How guest RAM is backed; a `size` in it sets the memory size too.
    pub fn memory_config(mut self, config: MemoryConfig) -> Self {
        if let Some(size) = config.size {
            self.memory_size = size;
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

    /// Opens the KVM device at `path` instead of `/dev/kvm`.
    pub fn kvm_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.kvm_path = path.into();
        self
    }

    /// Opens KVM, maps guest RAM, creates the VM and its vCPUs.
    pub fn build(self) -> Result<Machine, Error> {
        if self.vcpus == 0 {
            return Err(Error::Config("a machine needs at least one vCPU".into()));
        }
        let hypervisor = Hypervisor::open_at(&self.kvm_path)?;
        let max = hypervisor.max_vcpus();
        if self.vcpus as usize > max {
            return Err(Error::Config(format!(
                "{} vCPUs asked for, KVM allows {max} on this host",
                self.vcpus
            )));
        }
        let layout = MemoryLayout::x86_64(self.memory_size)?;
        let ram = GuestRam::new(&layout, &self.memory_config)?;
        let vm = Vm::new(&hypervisor)?;
        vm.register_memory(ram.memory())?;
        if self.irqchip {
            vm.create_irqchip()?;
            vm.create_pit()?;
        }
        let vcpus = (0..self.vcpus)
            .map(|id| vm.create_vcpu(id))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Machine {
            hypervisor,
            vm,
            ram,
            vcpus,
            pin_vcpus: self.pin_vcpus,
        })
    }
}

/// Guest memory, a VM and its vCPUs, not yet running anything.
#[derive(Debug)]
pub struct Machine {
    hypervisor: Hypervisor,
    vm: Vm,
    ram: GuestRam,
    vcpus: Vec<Vcpu>,
    pin_vcpus: bool,
}

impl Machine {
    /// The open KVM device.
    pub fn hypervisor(&self) -> &Hypervisor {
        &self.hypervisor
    }

    /// The VM, for ioeventfds, irqfds and more memory.
    pub fn vm(&self) -> &Vm {
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

    /// Copies `program` into guest RAM and points every vCPU at it, in the CPU mode it
    /// was assembled for. Each vCPU starts with its index in RDI and its own stack of
    /// 4 KiB below the program (or below the long-mode page tables' end, whichever is
    /// higher, so they never overlap).
    pub fn boot(self, program: &GuestProgram) -> Result<BootedMachine, Error> {
        let stacks = self.vcpus.len() as u64 * STACK_PER_VCPU;
        let stack_base = program.load_addr().checked_sub(stacks).ok_or_else(|| {
            Error::Config(format!(
                "no room for {stacks:#x} bytes of stacks below the program at {:#x}",
                program.load_addr()
            ))
        })?;
        if program.bitness() == Bitness::Long64 && stack_base < PAGE_TABLES_END {
            return Err(Error::Config(format!(
                "a long-mode program must load at or above {:#x} to leave room for the page \
                 tables and {} vCPU stacks; it loads at {:#x}",
                PAGE_TABLES_END + stacks,
                self.vcpus.len(),
                program.load_addr()
            )));
        }
        self.ram
            .memory()
            .write_slice(program.bytes(), GuestAddress(program.load_addr()))
            .map_err(|e| {
                Error::Config(format!(
                    "the program ({} bytes at {:#x}) does not fit in guest RAM: {e}",
                    program.bytes().len(),
                    program.load_addr()
                ))
            })?;
        let mode = cpu_mode(program.bitness());
        for (index, vcpu) in self.vcpus.iter().enumerate() {
            let stack_top = program.load_addr() - index as u64 * STACK_PER_VCPU;
            vcpu.enter_mode(self.ram.memory(), mode, program.load_addr(), stack_top)?;
            let mut regs = vcpu.regs()?;
            regs.rdi = index as u64;
            vcpu.set_regs(&regs)?;
        }
        Ok(BootedMachine { machine: self })
    }
}

fn cpu_mode(bitness: Bitness) -> CpuMode {
    match bitness {
        Bitness::Real16 => CpuMode::Real,
        Bitness::Protected32 => CpuMode::Protected,
        Bitness::Long64 => CpuMode::Long,
    }
}

/// A machine whose vCPUs are set up to run a program.
#[derive(Debug)]
pub struct BootedMachine {
    machine: Machine,
}

impl BootedMachine {
    /// The machine.
    pub fn machine(&self) -> &Machine {
        &self.machine
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
        let Machine {
            hypervisor,
            vm,
            ram,
            vcpus,
            pin_vcpus,
        } = self.machine;
        let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut handles = Vec::with_capacity(vcpus.len());
        for vcpu in vcpus {
            let mut config = VcpuThreadConfig::default();
            if let Some(event) = &exit_event {
                config = config.notifying(Arc::clone(event));
            }
            if pin_vcpus {
                config = config.pinned_to(vcpu.id() as usize % host_cpus);
            }
            // A failure here drops the handles already started, which stops them.
            handles.push(VcpuThread::spawn(vcpu, Arc::clone(&handler), config)?);
        }
        Ok(RunningMachine {
            _hypervisor: hypervisor,
            vm,
            ram,
            handles,
        })
    }
}

/// A machine whose vCPU threads are running.
///
/// Dropping it stops and joins every vCPU thread.
#[derive(Debug)]
pub struct RunningMachine {
    _hypervisor: Hypervisor,
    vm: Vm,
    ram: GuestRam,
    handles: Vec<VcpuHandle>,
}

impl RunningMachine {
    /// The VM.
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    /// Guest RAM.
    pub fn ram(&self) -> &GuestRam {
        &self.ram
    }

    /// The vCPU threads, for kick, pause, resume, stop and exit counts.
    pub fn vcpus(&self) -> &[VcpuHandle] {
        &self.handles
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
        for handle in self.handles {
            match handle.join() {
                Ok(outcome) => outcomes.push(outcome),
                // Dropping the remaining handles stops and joins them.
                Err(error) => return Err(error.into()),
            }
        }
        Ok(outcomes)
    }
}
