// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A virtio device driven from the benchmark's thread: the driver's rings in guest
//! memory, the transport's registers, and the event loop turned by hand.

// Test code: the values cast are small constants and sizes this file chose (queue
// slots, sector numbers, test buffer lengths), which its own assertions would catch
// truncating.
#![allow(clippy::cast_possible_truncation)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use kvmkit_devices::{BusDevice, EventLoop, VmShutdown};
use kvmkit_virtio::{
    EventFdVirtioInterrupt, GuestMemory, MmioTransport, NoShortcut, VirtioDevice, QUEUE_NOTIFY,
};
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use vm_memory::{Address, Bytes, GuestAddress};

/// Entries per queue.
pub const QUEUE: u16 = 256;
/// Where queue N's table and rings are: RINGS + N * 0x4000 (table, then the available
/// ring 0x1000 higher, then the used ring 0x1000 higher again).
const RINGS: u64 = 0x1_0000;

pub struct Driven {
    pub memory: Arc<GuestMemory>,
    pub transport: MmioTransport,
    event_loop: EventLoop,
    interrupt: Arc<EventFdVirtioInterrupt>,
    /// Per queue: chains offered and used so far (the rings' free-running index).
    used: Vec<u16>,
}

impl Driven {
    /// `device` with `queues` queues of QUEUE entries set up and DRIVER_OK, accepting
    /// `features` (VIRTIO_F_VERSION_1 is added).
    pub fn new(device: Box<dyn VirtioDevice>, queues: u16, features: u64) -> Self {
        let memory = Arc::new(GuestMemory::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap());
        let event_loop = EventLoop::new(Arc::new(VmShutdown::new().unwrap())).unwrap();
        let interrupt = Arc::new(EventFdVirtioInterrupt::new().unwrap());
        let transport = MmioTransport::new(
            device,
            0xd000_0000,
            Arc::clone(&memory),
            Arc::clone(&interrupt) as _,
            Arc::new(event_loop.handle()),
            Arc::new(NoShortcut),
        );
        let driven = Driven {
            memory,
            transport,
            event_loop,
            interrupt,
            used: vec![0; usize::from(queues)],
        };
        let features = features | (1 << 32);
        for status in [1, 3] {
            driven.write(0x70, status);
        }
        for select in 0..2u32 {
            driven.write(0x24, select);
            driven.write(0x20, (features >> (32 * select)) as u32);
        }
        driven.write(0x70, 0xb);
        for queue in 0..queues {
            driven.write(0x30, u32::from(queue));
            driven.write(0x38, u32::from(QUEUE));
            for (register, addr) in [
                (0x80, desc(queue)),
                (0x90, avail(queue)),
                (0xa0, used(queue)),
            ] {
                driven.write(register, addr.0 as u32);
                driven.write(register + 4, 0);
            }
            driven.write(0x44, 1);
        }
        driven.write(0x70, 0xf);
        driven
    }

    pub fn write(&self, offset: u64, value: u32) {
        self.transport.write(offset, &value.to_le_bytes());
    }

    /// Stores descriptor `index` of `queue`.
    pub fn store(&self, queue: u16, index: u16, addr: u64, len: u32, flags: u32, next: u16) {
        let descriptor = RawDescriptor::from(Descriptor::new(addr, len, flags as u16, next));
        let at = desc(queue).unchecked_add(16 * u64::from(index));
        self.memory.write_obj(descriptor, at).unwrap();
    }

    /// Offers the chains `heads` on `queue`, notifies, and turns the event loop until
    /// the device used them all; returns the time from the notify to the last use (the
    /// driver's writing of requests is not the device's work).
    pub fn run(&mut self, queue: u16, heads: impl ExactSizeIterator<Item = u16>) -> Duration {
        let start = self.used[usize::from(queue)];
        let count = heads.len() as u16;
        for (n, head) in heads.enumerate() {
            let slot = (u64::from(start) + n as u64) % u64::from(QUEUE);
            let at = avail(queue).unchecked_add(4 + 2 * slot);
            self.memory.write_obj(head, at).unwrap();
        }
        let target = start.wrapping_add(count);
        self.memory
            .write_obj(target, avail(queue).unchecked_add(2))
            .unwrap();
        let started = Instant::now();
        self.write(QUEUE_NOTIFY, u32::from(queue));
        let used_idx = used(queue).unchecked_add(2);
        loop {
            // Devices on the I/O thread are served by this turn; a device with a worker
            // thread of its own (block) is served there meanwhile. Like a vCPU waiting
            // for its disk, this thread looks at the used ring only once the device
            // raised its interrupt: reading the ring while the worker writes it would
            // take the cache line from the worker at each used element.
            self.event_loop.run_ready().unwrap();
            if self.interrupt.event().read().is_ok()
                && self.memory.read_obj::<u16>(used_idx).unwrap() == target
            {
                break;
            }
        }
        let elapsed = started.elapsed();
        assert_eq!(
            self.transport.status() & 0x40,
            0,
            "the device needs a reset"
        );
        self.used[usize::from(queue)] = target;
        elapsed
    }
}

fn desc(queue: u16) -> GuestAddress {
    GuestAddress(RINGS + 0x4000 * u64::from(queue))
}

fn avail(queue: u16) -> GuestAddress {
    desc(queue).unchecked_add(0x1000)
}

fn used(queue: u16) -> GuestAddress {
    desc(queue).unchecked_add(0x2000)
}
