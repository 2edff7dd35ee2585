// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! virtio-console: output to the console's output, input held until the driver offers
//! buffers, and hostile chains refused.

mod common;

use std::sync::Arc;

use common::*;
use kvmkit_devices::{ConsoleInput, ConsoleOutput, SerialOutput, SharedBuffer};
use kvmkit_virtio::{Console, CONSOLE_INPUT_BYTES};
use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
use vm_memory::{Bytes, GuestAddress};

const WRITE: u32 = VRING_DESC_F_WRITE;
const RX_RINGS: u64 = 0x9000;

struct ConsoleRig {
    rig: Rig,
    output: Arc<ConsoleOutput>,
    written: SharedBuffer,
    input: Arc<kvmkit_virtio::ConsoleInputPort>,
}

fn console() -> ConsoleRig {
    let written = SharedBuffer::default();
    let output =
        Arc::new(ConsoleOutput::new(SerialOutput::Writer(Box::new(written.clone()))).unwrap());
    let console = Console::new(Arc::clone(&output)).unwrap();
    let input = console.input();
    ConsoleRig {
        rig: Rig::new(Box::new(console)),
        output,
        written,
        input,
    }
}

#[test]
fn transmitted_bytes_reach_the_console_output() {
    let c = console();
    let rx = c.rig.mock_at(RX_RINGS);
    let tx = c.rig.mock();
    c.rig
        .memory
        .write_slice(b"hello, hvc0\n", GuestAddress(0x2_0000))
        .unwrap();
    tx.desc_table().store(0, desc(0x2_0000, 12, 0, 0)).unwrap();

    c.rig.negotiate(version_1());
    c.rig.setup_queue(0, &rx, u32::from(MOCK_SIZE));
    c.rig.setup_queue(1, &tx, u32::from(MOCK_SIZE));
    c.rig.driver_ok();
    c.rig.offer(&tx, &[0]);
    c.rig.write(QUEUE_NOTIFY, 1);
    assert!(c.rig.wait_interrupt());
    c.output.flush();

    assert_eq!(c.rig.used(&tx), vec![(0, 0)]);
    assert_eq!(c.written.contents(), b"hello, hvc0\n");
}

#[test]
fn input_waits_for_receive_buffers_and_then_fills_them() {
    let c = console();
    let rx = c.rig.mock_at(RX_RINGS);
    let tx = c.rig.mock();
    rx.desc_table()
        .store(0, desc(0x3_0000, 8, WRITE, 0))
        .unwrap();
    c.rig.negotiate(version_1());
    c.rig.setup_queue(0, &rx, u32::from(MOCK_SIZE));
    c.rig.setup_queue(1, &tx, u32::from(MOCK_SIZE));
    c.rig.driver_ok();

    let taken = c.input.enqueue_input(b"ls\n").unwrap();
    let room_while_waiting = c.input.input_room();
    c.rig.offer(&rx, &[0]);
    c.rig.write(QUEUE_NOTIFY, 0);
    assert!(c.rig.wait_interrupt());

    assert_eq!(taken, 3);
    assert_eq!(room_while_waiting, CONSOLE_INPUT_BYTES - 3);
    assert_eq!(c.rig.used(&rx), vec![(0, 3)]);
    assert_eq!(c.rig.read_bytes(0x3_0000, 3), b"ls\n");
    assert_eq!(c.input.input_room(), CONSOLE_INPUT_BYTES);
    // Signalled right after the interrupt, on the I/O thread.
    assert!(
        wait_readable(c.input.input_ready(), PATIENCE),
        "room was made: input may flow"
    );
}

#[test]
fn input_beyond_the_buffer_is_not_taken() {
    let c = console();

    let first = c
        .input
        .enqueue_input(&vec![b'x'; CONSOLE_INPUT_BYTES + 100])
        .unwrap();
    let more = c.input.enqueue_input(b"y").unwrap();

    assert_eq!((first, more), (CONSOLE_INPUT_BYTES, 0));
    assert_eq!(c.input.input_room(), 0);
}

#[test]
fn chains_in_the_wrong_direction_are_refused_and_counted() {
    let c = console();
    let rx = c.rig.mock_at(RX_RINGS);
    let tx = c.rig.mock();
    tx.desc_table()
        .store(0, desc(0x2_0000, 12, WRITE, 0))
        .unwrap();
    rx.desc_table().store(0, desc(0x3_0000, 8, 0, 0)).unwrap();
    c.rig.negotiate(version_1());
    c.rig.setup_queue(0, &rx, u32::from(MOCK_SIZE));
    c.rig.setup_queue(1, &tx, u32::from(MOCK_SIZE));
    c.rig.driver_ok();

    c.rig.offer(&tx, &[0]);
    c.rig.write(QUEUE_NOTIFY, 1);
    assert!(c.rig.wait_interrupt());
    c.input.enqueue_input(b"z").unwrap();
    c.rig.offer(&rx, &[0]);
    c.rig.write(QUEUE_NOTIFY, 0);
    assert!(c.rig.wait_interrupt());

    let counters = c.rig.transport.queue_counters();
    assert_eq!((counters[0].errors(), counters[1].errors()), (1, 1));
    assert!(c.written.contents().is_empty());
}
