// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Small guest programs: machine code copied to one address, run by every vCPU.

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::linux::{BootEntry, EntryMode, EntryProtocol};
use crate::{BootError, BootStructure};

/// Bytes of stack each vCPU of a program gets, below the program's load address.
pub const PROGRAM_STACK_PER_VCPU: u64 = 0x1000;

/// Copies `code` to guest-physical `load_addr` and returns the entry of a program run
/// by `vcpus` vCPUs from there in `mode`, each with its own
/// [`PROGRAM_STACK_PER_VCPU`] bytes of stack below the program.
pub fn load_program<M: GuestMemoryBackend>(
    memory: &M,
    mode: EntryMode,
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
