// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A KVM virtual machine: its memslots, interrupt controllers and event fds.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, CpuId, KVM_MEM_LOG_DIRTY_PAGES,
    KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, VmFd};
use vm_memory::bitmap::Bitmap;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, MemoryRegionAddress};
use vmm_sys_util::eventfd::EventFd;

pub use kvm_ioctls::{IoEventAddress, NoDatamatch};

use crate::error::MemslotError;
use crate::owners::MemoryOwners;
use crate::x86::CpuTopology;
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

    /// Adds the pages of another bitmap of the same slot (the pages devices wrote,
    /// from the memory's own dirty bitmap): the union is what migration must copy.
    pub fn include(&mut self, words: &[u64]) {
        for (mine, theirs) in self.bits.iter_mut().zip(words) {
            *mine |= theirs;
        }
    }
}

/// One guest-memory region registered with KVM, as [`Vm::memslots`] describes it.
///
/// Only a [`Vm`] makes these; to read a slot's dirty log, pass its [`slot`](Self::slot)
/// number to [`Vm::dirty_pages`], which looks the size up itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memslot {
    slot: u32,
    guest_addr: u64,
    size: u64,
    host_addr: u64,
    log_dirty: bool,
}

impl Memslot {
    /// KVM's slot number.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// Guest-physical start.
    pub fn guest_addr(&self) -> u64 {
        self.guest_addr
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Start of the mapping in this process.
    pub fn host_addr(&self) -> u64 {
        self.host_addr
    }

    /// Whether KVM logs the pages the guest writes in this slot.
    pub fn logs_dirty_pages(&self) -> bool {
        self.log_dirty
    }
}

/// The most bytes one memslot maps: KVM's `KVM_MEM_MAX_NR_PAGES` (2^31 - 1) pages of
/// 4 KiB. A larger region is refused by `KVM_SET_USER_MEMORY_REGION`; a VMM checks its
/// layout against this before mapping anything.
pub const MAX_MEMSLOT_SIZE: u64 = ((1 << 31) - 1) * 4096;

/// A KVM virtual machine.
///
/// Created from a [`Hypervisor`]; owns the VM file descriptor, the memslots (and keeps
/// the guest memory behind them mapped for as long as the VM or any of its vCPUs
/// lives) and creates the vCPUs.
pub struct Vm {
    // Declared first: closed before `memory` lets go of the mappings.
    fd: VmFd,
    cpuid: CpuId,
    /// The MSRs KVM lists for saving, for the vCPUs' state.
    msr_indices: Arc<Vec<u32>>,
    max_vcpus: usize,
    max_memslots: usize,
    memslots: Mutex<Vec<Memslot>>,
    irqchip: AtomicBool,
    memory: Arc<MemoryOwners>,
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
        let msr_indices = hypervisor
            .kvm()
            .get_msr_index_list()
            .map_err(Error::kvm("KVM_GET_MSR_INDEX_LIST"))?
            .as_slice()
            .to_vec();
        Ok(Vm {
            fd,
            msr_indices: Arc::new(msr_indices),
            cpuid: hypervisor.supported_cpuid()?,
            max_vcpus: hypervisor.max_vcpus(),
            max_memslots: hypervisor.kvm().get_nr_memslots(),
            memslots: Mutex::new(Vec::new()),
            irqchip: AtomicBool::new(false),
            memory: Arc::new(MemoryOwners::default()),
        })
    }

    /// Reads the state KVM holds for the VM beside its vCPUs (in-kernel PICs, IOAPIC,
    /// PIT, kvm-clock); its vCPUs must be paused.
    pub fn save_state(&self) -> Result<crate::x86::VmState, Error> {
        crate::x86::VmState::save(&self.fd, self.has_irqchip())
    }

    /// Sets that state, saved from a VM made as this one (irqchip and PIT alike),
    /// before its vCPUs run.
    pub fn restore_state(&self, state: &crate::x86::VmState) -> Result<(), Error> {
        state.restore(&self.fd)
    }

    /// Registers every region of `memory` as a memslot, in address order.
    ///
    /// The VM and its vCPUs keep a clone of the `Arc`, so the host pages stay mapped as
    /// long as the guest can reach them, whatever the caller drops. Only vm-memory's
    /// mmap-backed memory is taken: its regions own their mappings, which is what makes
    /// handing their addresses to KVM sound.
    pub fn register_memory<B>(
        &self,
        memory: &Arc<GuestMemoryMmap<B>>,
    ) -> Result<Vec<Memslot>, Error>
    where
        B: Bitmap + Send + Sync + 'static,
    {
        self.register_memory_with(memory, MemslotOptions::default())
    }

    /// Registers every region of `memory` as a memslot with `options`, in address
    /// order; otherwise as [`register_memory`](Self::register_memory).
    ///
    /// Either every region is registered or none is: if KVM refuses one, the slots this
    /// call added before it are deleted again.
    pub fn register_memory_with<B>(
        &self,
        memory: &Arc<GuestMemoryMmap<B>>,
        options: MemslotOptions,
    ) -> Result<Vec<Memslot>, Error>
    where
        B: Bitmap + Send + Sync + 'static,
    {
        let mut memslots = self.memslots.lock().unwrap_or_else(|e| e.into_inner());
        let first_slot = memslots.len();
        let regions = memory.num_regions();
        if first_slot + regions > self.max_memslots {
            let region = memory.iter().next();
            return Err(Error::Memslot {
                slot: u32::try_from(first_slot).unwrap_or(u32::MAX),
                guest_addr: region.map_or(0, |r| r.start_addr().0),
                size: region.map_or(0, |r| r.len()),
                reason: MemslotError::TooMany {
                    max: self.max_memslots,
                },
            });
        }
        // The owner is stored before KVM learns of the first region, so the mappings
        // outlive any slot that points at them, even one a failed call leaves behind.
        let owner: Arc<dyn Any + Send + Sync> = memory.clone();
        self.memory.keep(owner);
        let mut added = Vec::with_capacity(regions);
        for region in memory.iter() {
            let slot = u32::try_from(memslots.len()).unwrap_or(u32::MAX);
            match self.add_memslot(slot, region, options) {
                Ok(memslot) => {
                    memslots.push(memslot);
                    added.push(memslot);
                }
                Err(error) => {
                    self.remove_memslots(&added);
                    memslots.truncate(first_slot);
                    return Err(error);
                }
            }
        }
        Ok(added)
    }

    fn add_memslot<R: GuestMemoryRegion>(
        &self,
        slot: u32,
        region: &R,
        options: MemslotOptions,
    ) -> Result<Memslot, Error> {
        let guest_addr = region.start_addr().0;
        let size = region.len();
        let memslot_error = |reason| Error::Memslot {
            slot,
            guest_addr,
            size,
            reason,
        };
        let host_addr = region
            .get_host_address(MemoryRegionAddress(0))
            .map_err(|e| memslot_error(MemslotError::NoHostMapping(e)))?
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
        // SAFETY: `host_addr..host_addr + size` is a live mapping owned by an mmap
        // region of the memory whose `Arc` `register_memory_with` stored in
        // `self.memory` before this call; the VM and every vCPU hold that store past
        // the close of their file descriptors, so the mapping outlives the memslot.
        unsafe { self.fd.set_user_memory_region(kvm_region) }
            .map_err(|e| memslot_error(MemslotError::Kvm(e)))?;
        Ok(Memslot {
            slot,
            guest_addr,
            size,
            host_addr,
            log_dirty: options.log_dirty,
        })
    }

    /// Deletes `memslots` from KVM (best effort: used to undo a failed registration).
    fn remove_memslots(&self, memslots: &[Memslot]) {
        for memslot in memslots {
            let delete = kvm_userspace_memory_region {
                slot: memslot.slot,
                guest_phys_addr: memslot.guest_addr,
                memory_size: 0,
                userspace_addr: memslot.host_addr,
                flags: 0,
            };
            // SAFETY: a memory_size of 0 deletes the slot; KVM then maps no host memory
            // for it, so no mapping needs to outlive this call.
            let _ = unsafe { self.fd.set_user_memory_region(delete) };
        }
    }

    /// The memslots registered so far.
    pub fn memslots(&self) -> Vec<Memslot> {
        self.memslots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The pages the guest wrote in memslot `slot` since it was registered or since the
    /// last call for it: KVM returns the log and clears it in one step. The slot must
    /// have been registered with [`MemslotOptions::logging_dirty_pages`].
    pub fn dirty_pages(&self, slot: u32) -> Result<DirtyBitmap, Error> {
        let memslot = self
            .memslots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(slot as usize)
            .copied()
            .ok_or(Error::NoMemslot(slot))?;
        if !memslot.log_dirty {
            return Err(Error::Memslot {
                slot,
                guest_addr: memslot.guest_addr,
                size: memslot.size,
                reason: MemslotError::NotLogging,
            });
        }
        let bits = self
            .fd
            .get_dirty_log(
                memslot.slot,
                usize::try_from(memslot.size).unwrap_or(usize::MAX),
            )
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

    /// Detaches `fd` from interrupt `gsi` again.
    pub fn unregister_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<(), Error> {
        self.fd
            .unregister_irqfd(fd, gsi)
            .map_err(Error::kvm("KVM_IRQFD (deassign)"))
    }

    /// Creates vCPUs 0 to `count - 1`, each reporting a topology of `count`
    /// single-threaded cores in one package (see [`Vm::create_vcpu_in`]).
    pub fn create_vcpus(&self, count: u32) -> Result<Vec<Vcpu>, Error> {
        let topology = CpuTopology::new(count);
        (0..count)
            .map(|id| self.create_vcpu_in(id, topology))
            .collect()
    }

    /// Creates vCPU `id` as the only vCPU it knows of (a topology of `id + 1` cores);
    /// [`Vm::create_vcpus`] gives every vCPU of a VM the same topology.
    pub fn create_vcpu(&self, id: u32) -> Result<Vcpu, Error> {
        self.create_vcpu_in(id, CpuTopology::new(id + 1))
    }

    /// Creates vCPU `id` with CPUID (APIC id = `id`, `topology`'s cores, the host's
    /// topology hidden, KVM's paravirtual leaves kept), the MSRs a kernel expects at
    /// boot, FPU state and, with the irqchip, a local APIC wired for ExtINT and NMI.
    /// Its registers are in the reset state: with the irqchip, a vCPU other than 0
    /// waits for the guest's INIT and startup IPIs, and [`Vcpu::enter_mode`] makes it
    /// runnable instead.
    pub fn create_vcpu_in(&self, id: u32, topology: CpuTopology) -> Result<Vcpu, Error> {
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
        x86::cpuid::configure(&fd, &self.cpuid, id, topology)?;
        x86::msrs::configure(&fd)?;
        x86::fpu::configure(&fd)?;
        if self.has_irqchip() {
            x86::lapic::configure(&fd)?;
        }
        Ok(Vcpu::new(
            fd,
            id,
            self.has_irqchip(),
            Arc::clone(&self.msr_indices),
            Arc::clone(&self.memory),
        ))
    }
}
