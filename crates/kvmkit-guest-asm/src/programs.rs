// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Ready-made guests that more than one test, example or benchmark runs.

use crate::asm::*;
use crate::{Bitness, Error, GuestProgram};

/// The port of the first serial port (COM1).
pub const COM1: u32 = 0x3f8;
/// The debug exit port the guests below report through.
pub const DEBUG_EXIT: u32 = 0xf4;

/// Emits a subroutine at `routine` that writes the NUL-terminated string at RSI to
/// `port`, one `out` per byte, and returns. It clobbers RAX, RDX and RSI. Works in
/// 64-bit code; `call` it once the stack pointer is valid.
pub fn emit_print_routine(
    a: &mut CodeAssembler,
    routine: &mut CodeLabel,
    port: u32,
) -> Result<(), IcedError> {
    let mut next = a.create_label();
    let mut done = a.create_label();
    a.set_label(routine)?;
    a.mov(dx, port)?;
    a.set_label(&mut next)?;
    a.lodsb()?;
    a.test(al, al)?;
    a.jz(done)?;
    a.out(dx, al)?;
    a.jmp(next)?;
    a.set_label(&mut done)?;
    a.ret()
}

/// A long-mode serial echo driven by the receive interrupt, for vCPU 0 of a VM with
/// the in-kernel irqchip and COM1 on IRQ 4: installs an IDT entry for IRQ 4 (vector
/// 0x24), programs the 8259 PICs, enables the UART's receive interrupt, prints
/// `ready\n`, and halts with interrupts on. The handler echoes every received byte
/// and, on `q`, writes it (0x71) to the debug exit port.
///
/// Other vCPUs started at the same entry (RDI = their index, as
/// `kvmkit::MachineBuilder` sets) halt with interrupts off.
pub fn serial_echo(load_addr: u64) -> Result<GuestProgram, Error> {
    GuestProgram::assemble(Bitness::Long64, load_addr, |a| {
        let mut idt = a.create_label();
        let mut idtr = a.create_label();
        let mut handler = a.create_label();
        let mut ready = a.create_label();
        let mut idle = a.create_label();
        let mut print = a.create_label();

        let mut vcpu0 = a.create_label();
        a.test(rdi, rdi)?;
        a.jz(vcpu0)?;
        let mut park = a.create_label();
        a.cli()?;
        a.set_label(&mut park)?;
        a.hlt()?;
        a.jmp(park)?;
        a.set_label(&mut vcpu0)?;

        // IDT entry 0x24 -> handler (64-bit interrupt gate, selector 0x08).
        a.lea(rdi, ptr(idt))?;
        a.add(rdi, 0x24 * 16)?;
        a.lea(rax, ptr(handler))?;
        a.mov(word_ptr(rdi), ax)?;
        a.mov(word_ptr(rdi + 2), 0x08u32)?;
        a.mov(word_ptr(rdi + 4), 0x8e00u32)?;
        a.shr(rax, 16)?;
        a.mov(word_ptr(rdi + 6), ax)?;
        a.shr(rax, 16)?;
        a.mov(dword_ptr(rdi + 8), eax)?;
        a.lea(rax, ptr(idt))?;
        a.lea(rdi, ptr(idtr))?;
        a.mov(qword_ptr(rdi + 2), rax)?;
        a.lidt(ptr(rdi))?;

        // 8259 PICs: vectors 0x20 / 0x28, cascade on IRQ 2, only IRQ 4 unmasked.
        for (port, value) in [
            (0x20u32, 0x11u32),
            (0xa0, 0x11),
            (0x21, 0x20),
            (0xa1, 0x28),
            (0x21, 0x04),
            (0xa1, 0x02),
            (0x21, 0x01),
            (0xa1, 0x01),
            (0x21, 0xef),
            (0xa1, 0xff),
        ] {
            a.mov(al, value)?;
            a.out(port, al)?;
        }
        // UART: receive-data interrupt on, OUT2 (the IRQ gate on a PC).
        a.mov(dx, COM1 + 1)?;
        a.mov(al, 0x01u32)?;
        a.out(dx, al)?;
        a.mov(dx, COM1 + 4)?;
        a.mov(al, 0x08u32)?;
        a.out(dx, al)?;

        a.lea(rsi, ptr(ready))?;
        a.call(print)?;
        a.sti()?;
        a.set_label(&mut idle)?;
        a.hlt()?;
        a.jmp(idle)?;

        // The IRQ 4 handler: drain the receive FIFO, echoing; 'q' exits.
        let mut more = a.create_label();
        let mut drained = a.create_label();
        let mut not_quit = a.create_label();
        a.set_label(&mut handler)?;
        a.push(rax)?;
        a.push(rdx)?;
        a.set_label(&mut more)?;
        a.mov(dx, COM1 + 5)?;
        a.in_(al, dx)?;
        a.test(al, 1)?;
        a.jz(drained)?;
        a.mov(dx, COM1)?;
        a.in_(al, dx)?;
        a.out(dx, al)?;
        a.cmp(al, b'q' as i32)?;
        a.jne(not_quit)?;
        a.mov(dx, DEBUG_EXIT)?;
        a.out(dx, al)?;
        a.set_label(&mut not_quit)?;
        a.jmp(more)?;
        a.set_label(&mut drained)?;
        a.mov(al, 0x20u32)?;
        a.out(0x20u32, al)?;
        a.pop(rdx)?;
        a.pop(rax)?;
        a.iretq()?;

        emit_print_routine(a, &mut print, COM1)?;

        a.set_label(&mut ready)?;
        a.db(b"ready\n\0")?;
        a.set_label(&mut idtr)?;
        a.dw(&[256 * 16 - 1])?;
        a.dq(&[0])?;
        a.set_label(&mut idt)?;
        a.db(&[0u8; 256 * 16])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_echo_assembles_with_its_idt_after_the_code() {
        let program = serial_echo(0x10_0000).unwrap();

        assert_eq!(program.bitness(), Bitness::Long64);
        // The IDT (256 16-byte gates) ends the program.
        assert!(program.bytes().len() > 256 * 16);
        assert!(program.bytes().windows(7).any(|w| w == b"ready\n\0"));
    }
}
