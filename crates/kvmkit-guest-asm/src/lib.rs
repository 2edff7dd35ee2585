// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

#![deny(missing_docs)]
#![forbid(unsafe_code)]
//! Small x86 guest programs, written as readable assembly and assembled at run time.
//!
//! Tests, examples and benchmarks of a VMM need guests: a loop that writes a port, a
//! program that computes something in long mode, a vCPU that triple-faults. Carrying
//! them as hand-written opcode bytes makes them unreadable and unreviewable; this crate
//! lets them be written as assembly with [`iced_x86`]'s code assembler and turns them
//! into a [`GuestProgram`]: the bytes, the guest-physical address they were assembled
//! for, and the CPU mode they expect, which boots as a [`RawProgram`] does.
//!
//! ```
//! use kvmkit_guest_asm::{asm::*, CpuMode, GuestProgram};
//!
//! // Write 'A' to port 0x3f8, then halt.
//! let program = GuestProgram::assemble(CpuMode::Long, 0x1000, |a| {
//!     a.mov(dx, 0x3f8u32)?;
//!     a.mov(al, b'A' as u32)?;
//!     a.out(dx, al)?;
//!     a.hlt()?;
//!     Ok(())
//! })
//! .unwrap();
//! assert_eq!(program.load_addr(), 0x1000);
//! assert_eq!(program.bytes().last(), Some(&0xf4)); // hlt
//! ```

pub mod programs;

use iced_x86::code_asm::CodeAssembler;
use iced_x86::IcedError;
pub use kvmkit_boot::CpuMode;
use kvmkit_boot::{BootEntry, BootError, BootImage, PhysicalLayout, RawProgram};
use vm_memory::GuestMemoryBackend;

/// The code assembler and its register names, re-exported so a guest program can be
/// written with `use kvmkit_guest_asm::asm::*;` alone.
pub mod asm {
    pub use iced_x86::code_asm::*;
    pub use iced_x86::IcedError;
}

/// The operand size, in bits, of code for `mode`, as the assembler takes it.
fn bits(mode: CpuMode) -> u32 {
    match mode {
        CpuMode::Real => 16,
        CpuMode::Protected => 32,
        CpuMode::Long => 64,
    }
}

/// What can go wrong while assembling a guest program.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The program's source did not assemble (bad operand, unbound label, ...).
    #[error("guest program for {mode:?} mode at {load_addr:#x} does not assemble")]
    Assemble {
        /// The mode the program was written for.
        mode: CpuMode,
        /// The address it was assembled at.
        load_addr: u64,
        /// The assembler's error.
        #[source]
        source: IcedError,
    },
    /// A 16-bit program must fit in the first megabyte, where real mode can reach it.
    #[error("a real-mode program must load below 1 MiB, not at {0:#x}")]
    RealModeAddress(u64),
}

/// Assembled guest code, ready to copy into guest memory: a [`RawProgram`] made from
/// readable assembly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestProgram {
    program: RawProgram,
}

impl GuestProgram {
    /// Assembles the instructions that `write` emits, for code placed at the
    /// guest-physical address `load_addr` (which is also its entry point) and run in
    /// `mode`.
    ///
    /// `write` receives a fresh assembler of the mode's operand size and returns the
    /// assembler's own errors with `?`.
    pub fn assemble<F>(mode: CpuMode, load_addr: u64, write: F) -> Result<Self, Error>
    where
        F: FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
    {
        if mode == CpuMode::Real && load_addr >= 0x10_0000 {
            return Err(Error::RealModeAddress(load_addr));
        }
        let assemble = || -> Result<Vec<u8>, IcedError> {
            let mut assembler = CodeAssembler::new(bits(mode))?;
            write(&mut assembler)?;
            assembler.assemble(load_addr)
        };
        let bytes = assemble().map_err(|source| Error::Assemble {
            mode,
            load_addr,
            source,
        })?;
        Ok(GuestProgram {
            program: RawProgram::new(mode, load_addr, bytes),
        })
    }

    /// The mode the program was assembled for.
    pub fn mode(&self) -> CpuMode {
        self.program.mode()
    }

    /// The guest-physical address to copy the program to; execution starts there.
    pub fn load_addr(&self) -> u64 {
        self.program.load_addr()
    }

    /// The machine code.
    pub fn bytes(&self) -> &[u8] {
        self.program.bytes()
    }

    /// The first guest-physical address past the program.
    pub fn end_addr(&self) -> u64 {
        self.program.end_addr()
    }

    /// The program, to boot or copy.
    pub fn raw(&self) -> &RawProgram {
        &self.program
    }
}

/// A program boots as its [`RawProgram`] does: every vCPU runs it from its load
/// address, vCPU n with n in `RDI` and its own stack below the program.
impl BootImage for GuestProgram {
    fn load<M: GuestMemoryBackend>(
        &self,
        memory: &M,
        layout: &PhysicalLayout,
        vcpus: u32,
    ) -> Result<BootEntry, BootError> {
        self.program.load(memory, layout, vcpus)
    }
}

#[cfg(test)]
mod tests {
    use super::asm::*;
    use super::*;

    #[test]
    fn real_mode_program_encodes_16_bit_operands() {
        let program = GuestProgram::assemble(CpuMode::Real, 0x7c00, |a| {
            a.mov(ax, 0x1234u32)?;
            a.hlt()
        })
        .unwrap();

        // mov ax, imm16 is b8 iw in 16-bit code (no operand-size prefix).
        assert_eq!(program.bytes(), &[0xb8, 0x34, 0x12, 0xf4]);
        assert_eq!(program.end_addr(), 0x7c04);
    }

    #[test]
    fn labels_resolve_against_the_load_address() {
        let program = GuestProgram::assemble(CpuMode::Long, 0x2000, |a| {
            let mut data = a.create_label();
            a.lea(rax, ptr(data))?;
            a.hlt()?;
            a.set_label(&mut data)?;
            a.db(b"x")
        })
        .unwrap();

        // lea rax, [rip+1]: 48 8d 05 01 00 00 00, then hlt, then the data byte.
        assert_eq!(program.bytes(), &[0x48, 0x8d, 0x05, 1, 0, 0, 0, 0xf4, b'x']);
    }

    #[test]
    fn register_of_another_mode_is_an_assembly_error() {
        let result = GuestProgram::assemble(CpuMode::Protected, 0x1000, |a| a.inc(rax));

        assert!(matches!(result, Err(Error::Assemble { .. })));
    }

    #[test]
    fn real_mode_program_above_one_megabyte_is_refused() {
        let result = GuestProgram::assemble(CpuMode::Real, 0x10_0000, |a| a.hlt());

        assert!(matches!(result, Err(Error::RealModeAddress(0x10_0000))));
    }
}
