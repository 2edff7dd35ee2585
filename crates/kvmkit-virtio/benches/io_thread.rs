// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! How long a hostile driver can keep the I/O thread from its other sources.
//!
//! The I/O thread runs kvmkit's event loop with the devices on it and one more
//! source: a probe, signalled every millisecond by another thread, whose handler
//! records how late it ran. Meanwhile a hostile driver per device keeps each queue
//! full of 255-descriptor chains of 16 MiB each (every descriptor on the same 16 MiB
//! buffer; as long as the queue allows: the console's queues hold 64), notifying again
//! as soon as the device catches up. The table gives the
//! longest and the 99th-percentile delay of the probe per scenario: what a SIGTERM, a
//! console byte or another device waits at worst. Target: the longest ≤ 10 ms.
//!
//! ```text
//! cargo bench -p kvmkit-virtio --bench io_thread [-- SECONDS]
//! ```

// Bench code: ring offsets, queue indices and descriptor numbers are small constants.
#![allow(clippy::cast_possible_truncation)]

use std::fs::File;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvmkit_devices::{
    event_fd, BusDevice, ConsoleOutput, EventLoop, Flow, SerialOutput, VmShutdown,
};
use kvmkit_virtio::{
    Block, Console, DatagramBackend, EventFdVirtioInterrupt, GuestMemory, MmioTransport, Net,
    NoShortcut, Rng, VirtioDevice, QUEUE_NOTIFY,
};
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

const RAM: u64 = 64 << 20;
const QUEUE: u16 = 256;
const CHAIN: u16 = 255;
const BUFFER: u64 = 32 << 20;
const BUFFER_LEN: u32 = 16 << 20;
const RINGS: u64 = 0x10_0000;
const HEADER: u64 = 0x8_0000;
const STATUS: u64 = 0x8_1000;
const PROBE_EVERY: Duration = Duration::from_millis(1);

fn desc_table(queue: u16) -> u64 {
    RINGS + 0x1_0000 * u64::from(queue)
}

fn avail(queue: u16) -> u64 {
    desc_table(queue) + 0x2000
}

fn used(queue: u16) -> u64 {
    desc_table(queue) + 0x4000
}

/// What each descriptor of a hostile chain is.
#[derive(Clone, Copy)]
enum Shape {
    /// Every descriptor device-writable (rng, a receive queue).
    Writable,
    /// Every descriptor device-readable (a transmit queue).
    Readable,
    /// A block request: header, data descriptors of `len` bytes, status.
    BlockRead(u32),
}

/// One device behind its transport, and the hostile driver's queues.
struct Victim {
    memory: Arc<GuestMemory>,
    transport: MmioTransport,
    queues: Vec<(u16, Shape)>,
    /// The queue size the device takes (its maximum, up to QUEUE), and so the longest
    /// chain: one descriptor fewer.
    size: u16,
}

impl Victim {
    fn new(
        device: Box<dyn VirtioDevice>,
        event_loop: &EventLoop,
        queues: Vec<(u16, Shape)>,
    ) -> Self {
        let memory =
            Arc::new(GuestMemory::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap());
        let transport = MmioTransport::new(
            device,
            0xd000_0000,
            Arc::clone(&memory),
            Arc::new(EventFdVirtioInterrupt::new().unwrap()),
            Arc::new(event_loop.handle()),
            Arc::new(NoShortcut),
        );
        let mut victim = Victim {
            memory,
            transport,
            queues,
            size: QUEUE,
        };
        let (queue, _) = victim.queues[0];
        victim.write(0x30, u32::from(queue));
        let mut max = [0u8; 4];
        victim.transport.read(0x34, &mut max);
        victim.size = QUEUE.min(u32::from_le_bytes(max) as u16);
        victim
    }

    fn write(&self, offset: u64, value: u32) {
        self.transport.write(offset, &value.to_le_bytes());
    }

    /// Negotiates, lays the chains out and starts the device.
    fn start(&self, queue_count: u16) {
        for status in [1, 3] {
            self.write(0x70, status);
        }
        self.write(0x24, 1);
        self.write(0x20, 1);
        self.write(0x70, 0xb);
        for queue in 0..queue_count {
            self.write(0x30, u32::from(queue));
            self.write(0x38, u32::from(self.size));
            for (register, addr) in [
                (0x80, desc_table(queue)),
                (0x90, avail(queue)),
                (0xa0, used(queue)),
            ] {
                self.write(register, addr as u32);
                self.write(register + 4, 0);
            }
            self.write(0x44, 1);
        }
        for &(queue, shape) in &self.queues {
            self.lay_out(queue, shape);
        }
        self.write(0x70, 0xf);
    }

    fn store(&self, queue: u16, index: u16, addr: u64, len: u32, flags: u32) {
        let next = if index + 1 < self.chain() {
            VRING_DESC_F_NEXT
        } else {
            0
        };
        let descriptor =
            RawDescriptor::from(Descriptor::new(addr, len, (flags | next) as u16, index + 1));
        let at = GuestAddress(desc_table(queue) + 16 * u64::from(index));
        self.memory.write_obj(descriptor, at).unwrap();
    }

    fn chain(&self) -> u16 {
        CHAIN.min(self.size - 1)
    }

    fn lay_out(&self, queue: u16, shape: Shape) {
        for index in 0..self.chain() {
            match shape {
                Shape::Writable => self.store(queue, index, BUFFER, BUFFER_LEN, VRING_DESC_F_WRITE),
                Shape::Readable => self.store(queue, index, BUFFER, BUFFER_LEN, 0),
                Shape::BlockRead(len) => match index {
                    0 => self.store(queue, 0, HEADER, 16, 0),
                    last if last == self.chain() - 1 => {
                        self.store(queue, last, STATUS, 1, VRING_DESC_F_WRITE)
                    }
                    index => self.store(queue, index, BUFFER, len, VRING_DESC_F_WRITE),
                },
            }
        }
        // A read of sector 0.
        self.memory
            .write_obj([0u8; 16], GuestAddress(HEADER))
            .unwrap();
    }

    /// Keeps every queue full of the chain at head 0 until `stop`.
    fn harass(&self, stop: &AtomicBool) -> u64 {
        let mut offered = vec![0u16; self.queues.len()];
        let mut notifies = 0;
        while !stop.load(Ordering::Relaxed) {
            for (n, &(queue, _)) in self.queues.iter().enumerate() {
                let done: u16 = self.memory.read_obj(GuestAddress(used(queue) + 2)).unwrap();
                while offered[n].wrapping_sub(done) < self.size {
                    let slot = u64::from(offered[n] % self.size);
                    self.memory
                        .write_obj(0u16, GuestAddress(avail(queue) + 4 + 2 * slot))
                        .unwrap();
                    offered[n] = offered[n].wrapping_add(1);
                }
                self.memory
                    .write_obj(offered[n], GuestAddress(avail(queue) + 2))
                    .unwrap();
                self.write(QUEUE_NOTIFY, u32::from(queue));
                notifies += 1;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        notifies
    }
}

/// The probe's delays, in microseconds.
#[derive(Default)]
struct Delays(Mutex<Vec<u64>>);

fn scenario(name: &str, seconds: u64, make: impl FnOnce(&EventLoop) -> Vec<(Victim, u16)>) {
    let mut event_loop = EventLoop::new(Arc::new(VmShutdown::new().unwrap())).unwrap();
    let victims = make(&event_loop);
    let probe = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
    let signalled = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let delays = Arc::new(Delays::default());
    {
        let probe = Arc::clone(&probe);
        let signalled = Arc::clone(&signalled);
        let delays = Arc::clone(&delays);
        event_loop
            .add(event_fd(&Arc::clone(&probe)), move || {
                let _ = probe.read();
                let now = start.elapsed().as_micros() as u64;
                let at = signalled.swap(0, Ordering::AcqRel);
                if at != 0 {
                    delays.0.lock().unwrap().push(now.saturating_sub(at));
                }
                Flow::Continue
            })
            .unwrap();
    }
    let stop_loop = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    event_loop.add(event_fd(&stop_loop), || Flow::Stop).unwrap();
    let io_thread = std::thread::spawn(move || event_loop.run().unwrap());
    for (victim, queues) in &victims {
        victim.start(*queues);
    }

    let stop = AtomicBool::new(false);
    let notifies = std::thread::scope(|scope| {
        let drivers: Vec<_> = victims
            .iter()
            .map(|(victim, _)| scope.spawn(|| victim.harass(&stop)))
            .collect();
        let until = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < until {
            // Only a probe that ran gets a new stamp: a late one is measured whole.
            if signalled.load(Ordering::Acquire) == 0 {
                signalled.store(start.elapsed().as_micros().max(1) as u64, Ordering::Release);
                probe.write(1).unwrap();
            }
            std::thread::sleep(PROBE_EVERY);
        }
        stop.store(true, Ordering::Relaxed);
        drivers.into_iter().map(|d| d.join().unwrap()).sum::<u64>()
    });
    stop_loop.write(1).unwrap();
    io_thread.join().unwrap();

    let mut delays = delays.0.lock().unwrap().clone();
    delays.sort_unstable();
    let max = delays.last().copied().unwrap_or(0);
    let p99 = delays.get(delays.len() * 99 / 100).copied().unwrap_or(0);
    for (victim, _) in &victims {
        assert_eq!(
            victim.transport.status() & 0x40,
            0,
            "{name}: the device needs a reset"
        );
    }
    let served: u64 = victims
        .iter()
        .flat_map(|(victim, _)| victim.transport.queue_counters())
        .map(|counters| counters.requests() + counters.errors())
        .sum();
    println!(
        "{name:<34} {:>9.2} {:>9.2} {:>7} {:>8} {:>9}",
        max as f64 / 1000.0,
        p99 as f64 / 1000.0,
        delays.len(),
        notifies,
        served
    );
}

fn sparse_image(len: u64) -> File {
    let path = std::env::temp_dir().join(format!("kvmkit-bench-hostile-{}", std::process::id()));
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    file.set_len(len).unwrap();
    std::fs::remove_file(&path).unwrap();
    file
}

fn rng(event_loop: &EventLoop) -> (Victim, u16) {
    (
        Victim::new(Box::new(Rng::new()), event_loop, vec![(0, Shape::Writable)]),
        1,
    )
}

fn console(event_loop: &EventLoop) -> (Victim, u16) {
    let output = Arc::new(ConsoleOutput::new(SerialOutput::Sink).unwrap());
    let device = Console::new(output).unwrap();
    (
        Victim::new(Box::new(device), event_loop, vec![(1, Shape::Readable)]),
        2,
    )
}

fn net(event_loop: &EventLoop, peer: &mut Option<UnixDatagram>) -> (Victim, u16) {
    let (device_end, other) = UnixDatagram::pair().unwrap();
    *peer = Some(other);
    let device = Net::new(
        DatagramBackend::new(device_end).unwrap(),
        [0x52, 0x54, 0, 0, 0, 1],
    );
    (
        Victim::new(Box::new(device), event_loop, vec![(1, Shape::Readable)]),
        2,
    )
}

fn block(event_loop: &EventLoop, data_len: u32) -> (Victim, u16) {
    let device = Block::with_file(sparse_image(8 << 30), 8 << 30, false, b"");
    (
        Victim::new(
            Box::new(device),
            event_loop,
            vec![(0, Shape::BlockRead(data_len))],
        ),
        1,
    )
}

fn main() {
    let seconds = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(3);
    println!(
        "{:<34} {:>9} {:>9} {:>7} {:>8} {:>9}",
        "scenario (255 x 16 MiB chains)", "max_ms", "p99_ms", "probes", "notifies", "requests"
    );
    scenario("idle (no device)", seconds, |_| Vec::new());
    scenario("rng", seconds, |l| vec![rng(l)]);
    scenario("console transmit", seconds, |l| vec![console(l)]);
    let mut peer = None;
    scenario("net transmit", seconds, |l| vec![net(l, &mut peer)]);
    scenario("block 16 MiB segments (refused)", seconds, |l| {
        vec![block(l, 16 << 20)]
    });
    scenario("block 1 MiB segments (253 MiB)", seconds, |l| {
        vec![block(l, 1 << 20)]
    });
    scenario("all of them at once", seconds, |l| {
        vec![rng(l), console(l), net(l, &mut peer), block(l, 1 << 20)]
    });
}
