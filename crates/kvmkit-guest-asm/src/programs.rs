// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Ready-made guests that more than one test, example or benchmark runs.

use crate::asm::*;
use crate::{CpuMode, Error, GuestProgram};

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
    GuestProgram::assemble(CpuMode::Long, load_addr, |a| {
        let mut idt = a.create_label();
        let mut idtr = a.create_label();
        let mut handler = a.create_label();
        let mut ready = a.create_label();
        let mut idle = a.create_label();
        let mut print = a.create_label();

        emit_park_other_vcpus(a)?;

        emit_interrupt_gate(a, &mut idt, &mut idtr, &mut handler, 0x24)?;
        emit_master_pic(a, 4)?;
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

/// Where [`virtio_driver`] puts its queue in guest RAM, and how it reports.
pub mod virtio_layout {
    /// Queue 0's descriptor table (16-byte aligned); queue N's is N * `QUEUE_STRIDE`
    /// higher, and so are its rings.
    pub const DESC: u64 = 0x30_0000;
    /// Queue 0's available ring.
    pub const AVAIL: u64 = 0x30_1000;
    /// Queue 0's used ring.
    pub const USED: u64 = 0x30_2000;
    /// The distance between two queues' tables and rings.
    pub const QUEUE_STRIDE: u64 = 0x4000;
    /// Entries in the queue: the longest chain a request may have.
    pub const QUEUE_SIZE: u32 = 8;
    /// The port the results are written to, one 32-bit `out` each: the used length of
    /// each request in order, then the interrupts taken.
    pub const REPORT_PORT: u32 = 0x510;
    /// The debug exit code of a run whose requests all completed.
    pub const DONE: u32 = 0x10;
    /// The debug exit code when the device refused FEATURES_OK.
    pub const FEATURES_REFUSED: u32 = 0x21;
}

/// A request a [`virtio_driver`] makes: a descriptor chain on one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtioRequest {
    /// The queue it goes on.
    pub queue: u16,
    /// Its buffers, in chain order.
    pub buffers: Vec<VirtioBuffer>,
}

/// One buffer of a request a [`virtio_driver`] makes: its guest-physical address,
/// length, and whether the device writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioBuffer {
    /// Guest-physical address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// Device-writable (else device-readable).
    pub writable: bool,
}

/// A minimal virtio driver over virtio-mmio, for vCPU 0 of a VM with the in-kernel
/// irqchip and a device at `mmio_base` on ISA line `irq` (below 8). It negotiates
/// `VIRTIO_F_VERSION_1`, sets up `queues` queues with [`virtio_layout::QUEUE_SIZE`]
/// entries each in its own memory, then for each request in turn builds its descriptor
/// chain, makes it available on its queue, notifies that queue, and waits (with `sti; hlt`) until the
/// used ring has it and the device's interrupt came (the handler counts interrupts and
/// acknowledges them in the device). Then it reports each used length and the
/// interrupt count to [`virtio_layout::REPORT_PORT`] and ends through the debug exit
/// port. What the buffers hold (a request header, data to write) is whatever is in
/// guest memory there.
// The casts take ring addresses in the layout's first megabytes and request counts
// of a test, to the 32-bit immediates the instructions hold.
#[allow(clippy::cast_possible_truncation)]
pub fn virtio_driver(
    load_addr: u64,
    mmio_base: u64,
    irq: u8,
    queues: u16,
    requests: &[VirtioRequest],
) -> Result<GuestProgram, Error> {
    use virtio_layout::*;
    assert!(irq < 8, "the driver programs the master PIC only");
    assert!(requests.iter().all(|r| r.queue < queues));
    assert!(requests
        .iter()
        .all(|r| !r.buffers.is_empty() && r.buffers.len() <= QUEUE_SIZE as usize));
    GuestProgram::assemble(CpuMode::Long, load_addr, |a| {
        let mut idt = a.create_label();
        let mut idtr = a.create_label();
        let mut handler = a.create_label();
        let mut interrupts = a.create_label();
        let mut refused = a.create_label();

        emit_park_other_vcpus(a)?;

        emit_interrupt_gate(a, &mut idt, &mut idtr, &mut handler, 0x20 + u32::from(irq))?;
        emit_master_pic(a, irq)?;

        // Negotiate VIRTIO_F_VERSION_1 (feature bit 32).
        a.mov(rbx, mmio_base)?;
        for status in [1u32, 3] {
            a.mov(dword_ptr(rbx + 0x70), status)?;
        }
        a.mov(dword_ptr(rbx + 0x24), 1u32)?;
        a.mov(dword_ptr(rbx + 0x20), 1u32)?;
        a.mov(dword_ptr(rbx + 0x70), 0xbu32)?;
        a.mov(eax, dword_ptr(rbx + 0x70))?;
        a.test(eax, 8)?;
        a.jz(refused)?;

        // The queues in our memory, then DRIVER_OK.
        for queue in 0..queues {
            let offset = u64::from(queue) * QUEUE_STRIDE;
            a.mov(dword_ptr(rbx + 0x30), u32::from(queue))?;
            a.mov(dword_ptr(rbx + 0x38), QUEUE_SIZE)?;
            for (register, addr) in [(0x80, DESC), (0x90, AVAIL), (0xa0, USED)] {
                a.mov(dword_ptr(rbx + register), (addr + offset) as u32)?;
                a.mov(dword_ptr(rbx + register + 4), 0u32)?;
            }
            a.mov(dword_ptr(rbx + 0x44), 1u32)?;
            a.mov(rdi, AVAIL + offset)?;
            a.mov(dword_ptr(rdi), 0u32)?;
        }
        a.mov(dword_ptr(rbx + 0x70), 0xfu32)?;

        // Each request's position in its queue, to find its used entry afterwards.
        let mut per_queue = vec![0u32; usize::from(queues)];
        let mut positions = Vec::with_capacity(requests.len());
        for (n, request) in requests.iter().enumerate() {
            let count = &mut per_queue[usize::from(request.queue)];
            *count += 1;
            positions.push(*count);
            emit_request(a, request, *count, n as u32 + 1, &mut interrupts)?;
        }

        a.mov(dx, REPORT_PORT)?;
        for (request, position) in requests.iter().zip(positions) {
            let slot = ((position - 1) % QUEUE_SIZE) as i32;
            a.mov(rdi, USED + u64::from(request.queue) * QUEUE_STRIDE)?;
            a.mov(eax, dword_ptr(rdi + 8 + 8 * slot))?;
            a.out(dx, eax)?;
        }
        a.mov(eax, dword_ptr(interrupts))?;
        a.out(dx, eax)?;
        a.mov(dx, DEBUG_EXIT)?;
        a.mov(al, DONE)?;
        a.out(dx, al)?;
        a.hlt()?;

        a.set_label(&mut refused)?;
        a.mov(dx, DEBUG_EXIT)?;
        a.mov(al, FEATURES_REFUSED)?;
        a.out(dx, al)?;
        a.hlt()?;

        // The interrupt handler: count, acknowledge in the device, end of interrupt.
        a.set_label(&mut handler)?;
        a.push(rax)?;
        a.push(rcx)?;
        a.add(dword_ptr(interrupts), 1)?;
        a.mov(rax, mmio_base)?;
        a.mov(ecx, dword_ptr(rax + 0x60))?;
        a.mov(dword_ptr(rax + 0x64), ecx)?;
        a.mov(al, 0x20u32)?;
        a.out(0x20u32, al)?;
        a.pop(rcx)?;
        a.pop(rax)?;
        a.iretq()?;

        a.set_label(&mut interrupts)?;
        a.dd(&[0])?;
        a.set_label(&mut idtr)?;
        a.dw(&[256 * 16 - 1])?;
        a.dq(&[0])?;
        a.set_label(&mut idt)?;
        a.db(&[0u8; 256 * 16])
    })
}

/// Emits request number `serial` (1-based, over all queues), the `position`th on its
/// queue: its chain at the queue's descriptors 0.., the head in the available ring, the
/// notify (RBX holds the MMIO base), then the wait for the queue's used index to reach
/// `position` and the interrupt count to reach `serial`.
// At most QUEUE_SIZE buffers (asserted by virtio_driver): their table offsets and
// indices fit the instructions' immediates.
#[allow(clippy::cast_possible_truncation)]
fn emit_request(
    a: &mut CodeAssembler,
    request: &VirtioRequest,
    position: u32,
    serial: u32,
    interrupts: &mut CodeLabel,
) -> Result<(), IcedError> {
    use virtio_layout::*;
    let offset = u64::from(request.queue) * QUEUE_STRIDE;
    let buffers = &request.buffers;
    a.mov(rdi, DESC + offset)?;
    for (index, buffer) in buffers.iter().enumerate() {
        let entry = 16 * index as i32;
        let last = index + 1 == buffers.len();
        let flags = u32::from(!last) | (u32::from(buffer.writable) << 1);
        a.mov(rax, buffer.addr)?;
        a.mov(qword_ptr(rdi + entry), rax)?;
        a.mov(dword_ptr(rdi + entry + 8), buffer.len)?;
        a.mov(word_ptr(rdi + entry + 12), flags)?;
        a.mov(
            word_ptr(rdi + entry + 14),
            if last { 0 } else { index as u32 + 1 },
        )?;
    }
    a.mov(rdi, AVAIL + offset)?;
    let slot = ((position - 1) % QUEUE_SIZE) as i32;
    a.mov(word_ptr(rdi + 4 + 2 * slot), 0u32)?;
    a.mov(word_ptr(rdi + 2), position)?;
    a.mov(dword_ptr(rbx + 0x50), u32::from(request.queue))?;
    // `sti; hlt` cannot miss the interrupt.
    let mut wait = a.create_label();
    let mut sleep = a.create_label();
    let mut done = a.create_label();
    a.mov(rdi, USED + offset)?;
    a.set_label(&mut wait)?;
    a.cli()?;
    a.cmp(word_ptr(rdi + 2), position as i32)?;
    a.jne(sleep)?;
    a.cmp(dword_ptr(*interrupts), serial as i32)?;
    a.jae(done)?;
    a.set_label(&mut sleep)?;
    a.sti()?;
    a.hlt()?;
    a.jmp(wait)?;
    a.set_label(&mut done)
}

/// Emits: vCPUs other than 0 (RDI = their index, as `kvmkit::MachineBuilder` sets)
/// halt with interrupts off, for good; vCPU 0 goes on.
fn emit_park_other_vcpus(a: &mut CodeAssembler) -> Result<(), IcedError> {
    let mut vcpu0 = a.create_label();
    let mut park = a.create_label();
    a.test(rdi, rdi)?;
    a.jz(vcpu0)?;
    a.cli()?;
    a.set_label(&mut park)?;
    a.hlt()?;
    a.jmp(park)?;
    a.set_label(&mut vcpu0)
}

/// Emits: IDT entry `vector` -> `handler` (a 64-bit interrupt gate, selector 0x08) in
/// the 256-entry table at `idt`, and `lidt` of the descriptor at `idtr`. Clobbers RAX
/// and RDI.
fn emit_interrupt_gate(
    a: &mut CodeAssembler,
    idt: &mut CodeLabel,
    idtr: &mut CodeLabel,
    handler: &mut CodeLabel,
    vector: u32,
) -> Result<(), IcedError> {
    a.lea(rdi, ptr(*idt))?;
    a.add(rdi, (vector * 16) as i32)?;
    a.lea(rax, ptr(*handler))?;
    a.mov(word_ptr(rdi), ax)?;
    a.mov(word_ptr(rdi + 2), 0x08u32)?;
    a.mov(word_ptr(rdi + 4), 0x8e00u32)?;
    a.shr(rax, 16)?;
    a.mov(word_ptr(rdi + 6), ax)?;
    a.shr(rax, 16)?;
    a.mov(dword_ptr(rdi + 8), eax)?;
    a.lea(rax, ptr(*idt))?;
    a.lea(rdi, ptr(*idtr))?;
    a.mov(qword_ptr(rdi + 2), rax)?;
    a.lidt(ptr(rdi))
}

/// Emits: the 8259 PICs at vectors 0x20 and 0x28, the cascade on IRQ 2, and only
/// master line `irq` unmasked. Clobbers AL.
fn emit_master_pic(a: &mut CodeAssembler, irq: u8) -> Result<(), IcedError> {
    let mask = 0xffu32 & !(1u32 << irq);
    for (port, value) in [
        (0x20u32, 0x11u32),
        (0xa0, 0x11),
        (0x21, 0x20),
        (0xa1, 0x28),
        (0x21, 0x04),
        (0xa1, 0x02),
        (0x21, 0x01),
        (0xa1, 0x01),
        (0x21, mask),
        (0xa1, 0xff),
    ] {
        a.mov(al, value)?;
        a.out(port, al)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_echo_assembles_with_its_idt_after_the_code() {
        let program = serial_echo(0x10_0000).unwrap();

        assert_eq!(program.mode(), CpuMode::Long);
        // The IDT (256 16-byte gates) ends the program.
        assert!(program.bytes().len() > 256 * 16);
        assert!(program.bytes().windows(7).any(|w| w == b"ready\n\0"));
    }
}
