// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A KVM virtual machine: its memslots, interrupt controllers and event fds.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, CpuId, KVM_MEM_LOG_DIRTY_PAGES,
    KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};
use vmm_sys_util::eventfd::EventFd;

pub use kvm_ioctls::{IoEventAddress, NoDatamatch};

use crate::{x86, Error, Hypervisor, Vcpu};

/// Guest-physical address of the three pages Intel VMX needs for the real-mode TSS:
/// just below the 4 GiB boundary, inside the MMIO hole, never RAM.
const TSS_ADDRESS: usize = 0xfffb_d000;
/// Guest-physical address of the identity-map page table Intel VMX needs for real mode.
const IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;

/// How guest memory is registered as memslots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemslotOptions {
    /// Track the pages the guest writes (`KVM_MEM_LOG_DIRTY_PAGES`), for
    /// [`Vm::dirty_pages`]: what live migration and snapshots need.
    pub log_dirty: bool,
}

impl MemslotOptions {
    /// These options with dirty-page logging on.
    pub fn logging_dirty_pages(mut self) -> Self {
        self.log_dirty = true;
        self
    }
}

/// The pages of one memslot the guest wrote since the last look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtyBitmap {
    guest_addr: u64,
    bits: Vec<u64>,
}

impl DirtyBitmap {
    /// The page size the bitmap counts in.
    pub const PAGE_SIZE: u64 = 4096;

    /// The guest-physical addresses of the dirty pages, in order.
    pub fn dirty_pages(&self) -> impl Iterator<Item = u64> + '_ {
        self.bits.iter().enumerate().flat_map(move |(word, &bits)| {
            (0..64)
                .filter(move |bit| bits & (1 << bit) != 0)
                .map(move |bit| self.guest_addr + (word as u64 * 64 + bit) * Self::PAGE_SIZE)
        })
    }

    /// How many pages are dirty.
    pub fn count(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The raw bitmap: bit `i` of word `w` is page `64 * w + i` of the slot.
    pub fn words(&self) -> &[u64] {
        &self.bits
    }
}

/// One guest-memory region registered with KVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memslot {
    /// KVM's slot number.
    pub slot: u32,
    /// Guest-physical start.
    pub guest_addr: u64,
    /// Size in bytes.
    pub size: u64,
    /// Start of the mapping in this process.
    pub host_addr: u64,
    /// Whether KVM logs the pages the guest writes in this slot.
    pub log_dirty: bool,
}

/// A KVM virtual machine.
///
/// Created from a [`Hypervisor`]; owns the VM file descriptor, the memslots (and keeps
/// the guest memory behind them mapped for as long as the VM lives) and creates the
/// vCPUs.
pub struct Vm {
    fd: VmFd,
    cpuid: CpuId,
    max_vcpus: usize,
    max_memslots: usize,
    memslots: Mutex<Vec<Memslot>>,
    // Clones of every registered guest memory: KVM maps their host pages into the
    // guest, so they must not be unmapped while the VM exists.
    memory_owners: Mutex<Vec<Box<dyn Any + Send + Sync>>>,
    irqchip: AtomicBool,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("memslots", &self.memslots)
            .field("irqchip", &self.irqchip)
            .finish_non_exhaustive()
    }
}

impl Vm {
    /// Creates an empty VM: no memory, no vCPUs, no interrupt controllers.
    pub fn new(hypervisor: &Hypervisor) -> Result<Self, Error> {
        let fd = hypervisor
            .kvm()
            .create_vm()
            .map_err(Error::kvm("KVM_CREATE_VM"))?;
        fd.set_tss_address(TSS_ADDRESS)
            .map_err(Error::kvm("KVM_SET_TSS_ADDR"))?;
        if hypervisor.has(Cap::SetIdentityMapAddr) {
            fd.set_identity_map_address(IDENTITY_MAP_ADDRESS)
                .map_err(Error::kvm("KVM_SET_IDENTITY_MAP_ADDR"))?;
        }
        Ok(Vm {
            fd,
            cpuid: hypervisor.supported_cpuid()?,
            max_vcpus: hypervisor.max_vcpus(),
            max_memslots: hypervisor.kvm().get_nr_memslots(),
            memslots: Mutex::new(Vec::new()),
            memory_owners: Mutex::new(Vec::new()),
            irqchip: AtomicBool::new(false),
        })
    }

    /// Registers every region of `memory` as a memslot, in address order.
    ///
    /// The VM keeps a clone of `memory` (for [`vm_memory::GuestMemoryMmap`], a cheap
    /// clone that shares the mappings), so the host pages stay mapped as long as the
    /// guest can reach them.
    pub fn register_memory<M>(&self, memory: &M) -> Result<Vec<Memslot>, Error>
    where
        M: GuestMemoryBackend + Clone + Send + Sync + 'static,
    {
        self.register_memory_with(memory, MemslotOptions::default())
    }

    /// Registers every region of `memory` as a memslot with `options`, in address
    /// order; otherwise as [`register_memory`](Self::register_memory).
    pub fn register_memory_with<M>(
        &self,
        memory: &M,
        options: MemslotOptions,
    ) -> Result<Vec<Memslot>, Error>
    where
        M: GuestMemoryBackend + Clone + Send + Sync + 'static,
    {
        let mut memslots = self.memslots.lock().unwrap_or_else(|e| e.into_inner());
        let mut added = Vec::new();
        for region in memory.iter() {
            let slot = u32::try_from(memslots.len()).unwrap_or(u32::MAX);
            let guest_addr = region.start_addr().0;
            let size = region.len();
            let memslot_error = |reason: String| Error::Memslot {
                slot,
                guest_addr,
                size,
                reason,
            };
            if memslots.len() >= self.max_memslots {
                return Err(memslot_error(format!(
                    "KVM allows only {} memslots",
                    self.max_memslots
                )));
            }
            let host_addr = region
                .get_host_address(MemoryRegionAddress(0))
                .map_err(|e| memslot_error(format!("region has no host mapping: {e}")))?
                as u64;
            let kvm_region = kvm_userspace_memory_region {
                slot,
                flags: if options.log_dirty {
                    KVM_MEM_LOG_DIRTY_PAGES
                } else {
                    0
                },
                guest_phys_addr: guest_addr,
                memory_size: size,
                userspace_addr: host_addr,
            };
            // SAFETY: `host_addr..host_addr + size` is a live mapping owned by `memory`,
            // a clone of which is stored in `self.memory_owners` below before this
            // function returns, so it outlives the memslot (which dies with the VM fd).
            unsafe { self.fd.set_user_memory_region(kvm_region) }
                .map_err(|e| memslot_error(format!("KVM_SET_USER_MEMORY_REGION: {e}")))?;
            let memslot = Memslot {
                slot,
                guest_addr,
                size,
                host_addr,
                log_dirty: options.log_dirty,
            };
            memslots.push(memslot);
            added.push(memslot);
        }
        self.memory_owners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(memory.clone()));
        Ok(added)
    }

    /// The memslots registered so far.
    pub fn memslots(&self) -> Vec<Memslot> {
        self.memslots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The pages the guest wrote in `memslot` since it was registered or since the last
    /// call for it: KVM returns the log and clears it in one step.
    pub fn dirty_pages(&self, memslot: &Memslot) -> Result<DirtyBitmap, Error> {
        if !memslot.log_dirty {
            return Err(Error::Memslot {
                slot: memslot.slot,
                guest_addr: memslot.guest_addr,
                size: memslot.size,
                reason: "it was registered without dirty-page logging".into(),
            });
        }
        let bits = self
            .fd
            .get_dirty_log(memslot.slot, memslot.size as usize)
            .map_err(Error::kvm("KVM_GET_DIRTY_LOG"))?;
        Ok(DirtyBitmap {
            guest_addr: memslot.guest_addr,
            bits,
        })
    }

    /// Creates the in-kernel PIC, IOAPIC and per-vCPU local APICs. Call it before
    /// creating vCPUs; with it, `hlt` is handled in the kernel and no longer exits.
    pub fn create_irqchip(&self) -> Result<(), Error> {
        self.fd
            .create_irq_chip()
            .map_err(Error::kvm("KVM_CREATE_IRQCHIP"))?;
        self.irqchip.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether the in-kernel irqchip exists.
    pub fn has_irqchip(&self) -> bool {
        self.irqchip.load(Ordering::Acquire)
    }

    /// Creates the in-kernel i8254 PIT (ports 0x40-0x43, IRQ 0). Needs the irqchip.
    pub fn create_pit(&self) -> Result<(), Error> {
        if !self.has_irqchip() {
            return Err(Error::NoIrqchip("the in-kernel PIT"));
        }
        let config = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        self.fd
            .create_pit2(config)
            .map_err(Error::kvm("KVM_CREATE_PIT2"))
    }

    /// Makes guest writes to `addr` signal `fd` inside the kernel, without an exit to
    /// userspace. With a `datamatch` value other than [`NoDatamatch`], only writes of
    /// that value (and of its size) signal.
    pub fn register_ioeventfd<T: Into<u64>>(
        &self,
        fd: &EventFd,
        addr: IoEventAddress,
        datamatch: T,
    ) -> Result<(), Error> {
        self.fd
            .register_ioevent(fd, &addr, datamatch)
            .map_err(Error::kvm("KVM_IOEVENTFD"))
    }

    /// Removes an ioeventfd registered with the same arguments.
    pub fn unregister_ioeventfd<T: Into<u64>>(
        &self,
        fd: &EventFd,
        addr: IoEventAddress,
        datamatch: T,
    ) -> Result<(), Error> {
        self.fd
            .unregister_ioevent(fd, &addr, datamatch)
            .map_err(Error::kvm("KVM_IOEVENTFD (deassign)"))
    }

    /// Makes a write to `fd` raise interrupt `gsi` inside the kernel. Needs the irqchip.
    pub fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<(), Error> {
        if !self.has_irqchip() {
            return Err(Error::NoIrqchip("an irqfd"));
        }
        self.fd
            .register_irqfd(fd, gsi)
            .map_err(Error::kvm("KVM_IRQFD"))
    }

    /// Creates vCPU `id` with CPUID (APIC id = `id`), the basic MSRs, FPU state and, with
    /// the irqchip, a local APIC wired for ExtINT and NMI. Its registers are in the
    /// reset state until [`Vcpu::enter_mode`] sets a CPU mode.
    pub fn create_vcpu(&self, id: u32) -> Result<Vcpu, Error> {
        if id as usize >= self.max_vcpus {
            return Err(Error::VcpuId {
                id,
                max: self.max_vcpus,
            });
        }
        let fd = self
            .fd
            .create_vcpu(u64::from(id))
            .map_err(Error::kvm("KVM_CREATE_VCPU"))?;
        x86::cpuid::configure(&fd, &self.cpuid, id)?;
        x86::msrs::configure(&fd)?;
        x86::fpu::configure(&fd)?;
        if self.has_irqchip() {
            x86::lapic::configure(&fd)?;
        }
        Ok(Vcpu::new(fd, id, self.has_irqchip()))
    }

    /// The kvm-ioctls handle, for what this crate does not wrap.
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }
}
