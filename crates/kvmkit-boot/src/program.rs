// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Small guest programs: machine code copied to one address, run by every vCPU.

use kvmkit_memory::x86::CpuMode;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::{BootEntry, BootError, BootImage, BootStructure, EntryProtocol, PhysicalLayout};

/// Bytes of stack each vCPU of a program gets, below the program's load address.
pub const PROGRAM_STACK_PER_VCPU: u64 = 0x1000;

/// Copies `code` to guest-physical `load_addr` and returns the entry of a program run
/// by `vcpus` vCPUs from there in `mode`, each with its own
/// [`PROGRAM_STACK_PER_VCPU`] bytes of stack below the program.
pub fn load_program<M: GuestMemoryBackend>(
    memory: &M,
    mode: CpuMode,
    load_addr: u64,
    code: &[u8],
    vcpus: u32,
) -> Result<BootEntry, BootError> {
    let stacks = u64::from(vcpus) * PROGRAM_STACK_PER_VCPU;
    if load_addr < stacks {
        return Err(BootError::ProgramStacks { load_addr, stacks });
    }
    memory
        .write_slice(code, GuestAddress(load_addr))
        .map_err(BootError::write(BootStructure::Program))?;
    Ok(BootEntry {
        protocol: EntryProtocol::Program {
            mode,
            stack_stride: PROGRAM_STACK_PER_VCPU,
        },
        entry: load_addr,
        stack_top: load_addr,
    })
}

/// Machine code and where it runs: a [`BootImage`] every vCPU runs from its load
/// address in its mode, vCPU n with n in `RDI` and its own
/// [`PROGRAM_STACK_PER_VCPU`] bytes of stack below the program.
///
/// ```
/// use kvmkit_boot::{BootImage, CpuMode, EntryProtocol, PhysicalLayout, RawProgram};
/// use vm_memory::{GuestAddress, GuestMemoryMmap};
///
/// let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
/// let layout = PhysicalLayout::new(&[(0, 16 << 20)]).unwrap();
/// let hlt = RawProgram::new(CpuMode::Long, 0x10_0000, [0xf4]);
/// let entry = hlt.load(&memory, &layout, 2).unwrap();
/// assert_eq!(entry.entry, 0x10_0000);
/// assert!(matches!(entry.protocol, EntryProtocol::Program { mode: CpuMode::Long, .. }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawProgram {
    mode: CpuMode,
    load_addr: u64,
    bytes: Vec<u8>,
}

impl RawProgram {
    /// `bytes` to run in `mode` from guest-physical `load_addr`.
    pub fn new(mode: CpuMode, load_addr: u64, bytes: impl Into<Vec<u8>>) -> Self {
        RawProgram {
            mode,
            load_addr,
            bytes: bytes.into(),
        }
    }

    /// The mode it runs in.
    pub fn mode(&self) -> CpuMode {
        self.mode
    }

    /// The guest-physical address it is copied to; execution starts there.
    pub fn load_addr(&self) -> u64 {
        self.load_addr
    }

    /// The machine code.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The first guest-physical address past the program.
    pub fn end_addr(&self) -> u64 {
        self.load_addr + self.bytes.len() as u64
    }
}

impl BootImage for RawProgram {
    fn load<M: GuestMemoryBackend>(
        &self,
        memory: &M,
        _layout: &PhysicalLayout,
        vcpus: u32,
    ) -> Result<BootEntry, BootError> {
        load_program(memory, self.mode, self.load_addr, &self.bytes, vcpus)
    }
}
