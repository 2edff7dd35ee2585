// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

#![deny(missing_docs)]
//! The logic of kvmkit's fuzz targets, as plain functions: the libFuzzer targets in
//! `fuzz_targets/` call them, and the tests below replay every file of each target's
//! corpus through them on stable Rust, so a crash once found stays fixed.
//!
//! ```text
//! RUSTC_BOOTSTRAP=1 cargo fuzz run memory_config   # from the workspace root
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use kvmkit_devices::ConsoleOutput;
use kvmkit_devices::EventLoop;
use kvmkit_devices::{
    AcpiSleepControl, AddressSpace, Bus, BusDevice, BusError, CmosRtc, DebugExit, EventFdInterrupt,
    SerialOutput, SerialPort, VmShutdown, ACPI_SLEEP_CONTROL_LEN, ACPI_SLEEP_CONTROL_PORT,
    CMOS_PORT, CMOS_PORT_LEN, COM1_PORT, DEBUG_EXIT_PORT, DEBUG_EXIT_PORT_LEN, I8042,
    I8042_DATA_PORT, PVPANIC_PORT, PVPANIC_PORT_LEN, RESET_CONTROL_PORT, RESET_CONTROL_PORT_LEN,
    SERIAL_PORT_LEN,
};
use kvmkit_devices::{
    BootTimer, GedEvent, GenericEventDevice, PvPanic, ResetControl, BOOT_TIMER_LEN, GED_PORT,
    GED_PORT_LEN,
};
use kvmkit_memory::{Backing, MemoryConfig, MemoryLayout};
use kvmkit_virtio::{
    Block, Console, DatagramBackend, EventFdVirtioInterrupt, GuestMemory, MmioTransport, Net,
    NoShortcut, Offloads, Rng, VirtioDevice,
};
use std::fs::File;
use std::os::unix::net::UnixDatagram;
use vm_memory::GuestAddress;

/// A user's `--memory` text: parsing never panics, what parses prints back to the same
/// configuration, and resolving it against the host (without mapping anything) never
/// panics either.
pub fn memory_config(data: &[u8]) {
    let _one_at_a_time = one_at_a_time();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = text.parse::<MemoryConfig>() else {
        return;
    };
    let printed = config.to_string();
    let again: MemoryConfig = printed
        .parse()
        .unwrap_or_else(|e| panic!("{printed:?} does not parse back: {e}"));
    assert_eq!(again, config, "{printed:?}");
    let size = config.size.unwrap_or(16 << 20);
    if let Ok(layout) = MemoryLayout::x86_64(size) {
        let _ = Backing::resolve(&config, &layout);
    }
}

/// A stream of bus registrations and accesses, checked against a plain model: a
/// registration succeeds exactly when the range is valid and overlaps nothing, and
/// every access reaches the device the model says covers the address.
pub fn bus(data: &[u8]) {
    let _one_at_a_time = one_at_a_time();
    let Some((&space, mut ops)) = data.split_first() else {
        return;
    };
    let space = if space & 1 == 0 {
        AddressSpace::Pio
    } else {
        AddressSpace::Mmio
    };
    let bus = Bus::new(space);
    // base -> (last, device id)
    let mut model: BTreeMap<u64, (u64, u8)> = BTreeMap::new();
    let mut next_id = 0u8;
    while let Some((op, rest)) = ops.split_first() {
        let Some((addr, rest)) = take_u64(rest, space) else {
            return;
        };
        ops = rest;
        if op & 1 == 0 {
            let Some((len, rest)) = take_u64(ops, space) else {
                return;
            };
            ops = rest;
            let len = if op & 2 == 0 { len % 64 } else { len };
            let id = next_id;
            next_id = next_id.wrapping_add(1);
            let result = bus.insert(addr, len, "fuzz", Arc::new(IdDevice(id)));
            let expected = model_insert(&mut model, space, addr, len, id);
            assert_eq!(
                result.is_ok(),
                expected,
                "insert {addr:#x}+{len:#x}: {result:?}"
            );
            if let Err(error) = result {
                assert!(matches!(
                    error,
                    BusError::Overlap { .. } | BusError::BadRange { .. }
                ));
            }
        } else {
            let mut data = [0u8; 4];
            bus.read(addr, &mut data);
            let expected = model
                .range(..=addr)
                .next_back()
                .filter(|(_, (last, _))| addr <= *last)
                .map_or(0xff, |(_, (_, id))| *id);
            assert_eq!(data, [expected; 4], "read {addr:#x}");
        }
    }
}

fn model_insert(
    model: &mut BTreeMap<u64, (u64, u8)>,
    space: AddressSpace,
    base: u64,
    len: u64,
    id: u8,
) -> bool {
    let Some(last) = len.checked_sub(1).and_then(|l| base.checked_add(l)) else {
        return false;
    };
    if last > space.last_addr() {
        return false;
    }
    let overlaps = model.iter().any(|(&b, &(l, _))| b <= last && base <= l);
    if overlaps {
        return false;
    }
    model.insert(base, (last, id));
    true
}

/// An address (a port for the port bus) from the stream: 2 bytes for ports, 8 for
/// MMIO, so the fuzzer reaches the ends of both spaces.
fn take_u64(data: &[u8], space: AddressSpace) -> Option<(u64, &[u8])> {
    let width = if space == AddressSpace::Pio { 2 } else { 8 };
    if data.len() < width {
        return None;
    }
    let mut bytes = [0u8; 8];
    bytes[..width].copy_from_slice(&data[..width]);
    // A high bit on a port widens it past 0xffff, to test the port-space check.
    let mut value = u64::from_le_bytes(bytes);
    if space == AddressSpace::Pio && value & 0x8000 != 0 && data.len() > width {
        value += u64::from(data[width]) << 16;
    }
    Some((value, &data[width..]))
}

/// Answers every read with its id: which device a bus access reached.
struct IdDevice(u8);

impl BusDevice for IdDevice {
    fn read(&self, _offset: u64, data: &mut [u8]) {
        data.fill(self.0);
    }
    fn write(&self, _offset: u64, _data: &[u8]) {}
}

/// The legacy devices of the platform on one port bus (COM1, the i8042, the CMOS RTC,
/// ACPI sleep control, the debug exit port, pvpanic and the reset control register),
/// driven by a stream of accesses of any width, host input and output flushes, as a
/// guest and the I/O thread would.
pub fn legacy_devices(data: &[u8]) {
    let _one_at_a_time = one_at_a_time();
    let shutdown = Arc::new(VmShutdown::new().expect("an eventfd"));
    let interrupt = Arc::new(EventFdInterrupt::new().expect("an eventfd"));
    let output = Arc::new(Mutex::new(Vec::new()));
    let serial = Arc::new(
        SerialPort::new(
            interrupt,
            SerialOutput::Writer(Box::new(CappedWriter(output.clone()))),
        )
        .expect("a serial port"),
    );
    let ports = Bus::new(AddressSpace::Pio);
    let clock = Box::new(|| UNIX_EPOCH + Duration::from_secs(1_795_615_509));
    let events = Arc::new(GenericEventDevice::new(Arc::new(
        EventFdInterrupt::new().expect("an eventfd"),
    )));
    let devices: [(u64, u64, Arc<dyn BusDevice>); 9] = [
        (COM1_PORT, SERIAL_PORT_LEN, serial.clone()),
        (I8042_DATA_PORT, 5, Arc::new(I8042::new(shutdown.clone()))),
        (
            CMOS_PORT,
            CMOS_PORT_LEN,
            Arc::new(CmosRtc::with_clock(clock)),
        ),
        (
            ACPI_SLEEP_CONTROL_PORT,
            ACPI_SLEEP_CONTROL_LEN,
            Arc::new(AcpiSleepControl::new(shutdown.clone())),
        ),
        (
            DEBUG_EXIT_PORT,
            DEBUG_EXIT_PORT_LEN,
            Arc::new(DebugExit::new(shutdown.clone())),
        ),
        (
            PVPANIC_PORT,
            PVPANIC_PORT_LEN,
            Arc::new(PvPanic::new(shutdown.clone())),
        ),
        (
            RESET_CONTROL_PORT,
            RESET_CONTROL_PORT_LEN,
            Arc::new(ResetControl::new(shutdown.clone())),
        ),
        (GED_PORT, GED_PORT_LEN, events.clone()),
        // An MMIO device on a machine; the port bus has room for its window.
        (0x2000, BOOT_TIMER_LEN, Arc::new(BootTimer::new())),
    ];
    for (base, len, device) in &devices {
        ports
            .insert(*base, *len, "device", device.clone())
            .expect("the legacy devices do not overlap");
    }
    for op in data.chunks(4) {
        let [kind, target, offset, value] = *op else {
            return;
        };
        let (base, len, _) = &devices[usize::from(target) % devices.len()];
        let port = base + u64::from(offset) % len;
        let width = [1usize, 2, 4][usize::from(kind >> 4) % 3];
        match kind & 0x7 {
            0..=1 => {
                let mut data = [0xa5u8; 4];
                ports.read(port, &mut data[..width]);
            }
            2..=4 => {
                let bytes = u32::from(value).wrapping_mul(0x0101_0101).to_le_bytes();
                ports.write(port, &bytes[..width]);
            }
            5 if value & 0x80 != 0 => {
                let event = [GedEvent::PowerButton, GedEvent::VmGeneration][usize::from(value & 1)];
                events.notify(event).expect("an eventfd write");
            }
            5 => {
                let room = serial.input_room();
                let taken = serial
                    .enqueue_input(&[value; 16])
                    .expect("input never fails");
                assert!(taken <= room, "took {taken} bytes with room for {room}");
            }
            _ => {
                serial.output().flush();
            }
        }
    }
    serial.output().finish();
}

/// An in-memory output that keeps at most 64 KiB, as a test reader would.
struct CappedWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CappedWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let mut bytes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if bytes.len() < 1 << 16 {
            bytes.extend_from_slice(data);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A virtio device behind the virtio-mmio transport, with guest memory and an event
/// loop stepped by hand: what the virtio targets drive.
struct VirtioRig {
    memory: Arc<GuestMemory>,
    transport: MmioTransport,
    event_loop: EventLoop,
    /// Descriptors open once the rig was made: what a reset must bring it back to.
    fds: usize,
}

/// Held by every target for the whole input: libFuzzer runs one input at a time, and
/// `cargo test` replays the corpora on parallel threads, where the virtio targets'
/// count of this process's descriptors would see another target's. It begins once
/// the last input's descriptors are gone ([`wait_for_quiet_fds`]).
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    wait_for_quiet_fds();
    one
}

/// Event fds, epoll instances and sockets this process holds: what a device makes and
/// must give back. (Files are left out: `cargo test` replays other targets' corpora on
/// other threads meanwhile.)
fn open_fds() -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    dir.filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| {
            let target = target.to_string_lossy();
            target.starts_with("anon_inode:") || target.starts_with("socket:")
        })
        .count()
}

/// Guest RAM of the virtio targets.
const VIRTIO_RAM: usize = 0x4_0000;
/// Where the virtio targets' rings live, and where the blk target's buffers start.
const VIRTIO_RINGS: u64 = VIRTIO_RINGS_32 as u64;
const VIRTIO_RINGS_32: u32 = 0x1000;
const VIRTIO_BUFFERS: u64 = 0x2_0000;

/// The count of descriptors before the last input began. A disk's worker ends on its
/// own thread once its rig is gone, closing its descriptors as it goes; until then the
/// count is above this, and a rig made meanwhile would count the worker's descriptors
/// as its own (and its reset check find one missing when the worker ends).
static QUIET_FDS: std::sync::Mutex<Option<usize>> = std::sync::Mutex::new(None);

/// Waits (two seconds at most) until the last input's rig and what it started are
/// gone, and records the count for this one.
fn wait_for_quiet_fds() {
    let mut quiet = QUIET_FDS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(level) = *quiet {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while open_fds() > level && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    *quiet = Some(open_fds());
}

impl VirtioRig {
    fn new(device: Box<dyn VirtioDevice>) -> Self {
        let ram = [(GuestAddress(0), VIRTIO_RAM)];
        let memory = Arc::new(GuestMemory::from_ranges(&ram).expect("guest RAM"));
        let event_loop = EventLoop::new(Arc::new(VmShutdown::new().expect("an eventfd")))
            .expect("an event loop");
        let interrupt = Arc::new(EventFdVirtioInterrupt::new().expect("an eventfd"));
        let transport = MmioTransport::new(
            device,
            0xd000_0000,
            Arc::clone(&memory),
            interrupt,
            Arc::new(event_loop.handle()),
            Arc::new(NoShortcut),
        );
        VirtioRig {
            memory,
            transport,
            event_loop,
            fds: open_fds(),
        }
    }

    /// Resets the device, as a driver may at any point, and checks that nothing of
    /// what it did survives: no event-loop source, no descriptor (a disk's worker
    /// ends on its own thread, so its descriptors are waited for, briefly).
    fn reset_and_check_nothing_is_left(&mut self) {
        self.write(0x70, 0);
        self.settle();
        assert_eq!(
            self.event_loop.source_count(),
            0,
            "an event source outlived the reset"
        );
        // The count the loop saw is the one checked: counting again after the loop
        // saw it settle read one descriptor short now and then (a count taken while
        // another thread's descriptor changes hands).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut open = open_fds();
        while open != self.fds && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
            open = open_fds();
        }
        assert_eq!(open, self.fds, "a descriptor outlived the reset");
    }

    fn write(&self, offset: u64, value: u32) {
        self.transport.write(offset, &value.to_le_bytes());
    }

    fn read(&self, offset: u64) -> u32 {
        let mut value = [0u8; 4];
        self.transport.read(offset, &mut value);
        u32::from_le_bytes(value)
    }

    /// Runs what the device has to do now (twice: once to take new sources, once to
    /// serve them).
    fn settle(&mut self) {
        for _ in 0..2 {
            self.event_loop.run_ready().expect("the event loop runs");
        }
    }

    /// A spec-following setup of queue 0 (16 entries at VIRTIO_RINGS), up to DRIVER_OK.
    fn set_up_queue(&self) {
        self.set_up_queues(1);
    }

    /// A spec-following setup of `count` queues of 16 entries, queue N's table and
    /// rings at VIRTIO_RINGS + N * 0x400, up to DRIVER_OK.
    fn set_up_queues(&self, count: u32) {
        let _ = self.set_up_queues_with(count, 0);
    }

    /// As [`set_up_queues`](Self::set_up_queues), the driver also accepting those of
    /// the features `low` (bits 0..32) that the device offers; returns them.
    fn set_up_queues_with(&self, count: u32, low: u32) -> u32 {
        for status in [1, 3] {
            self.write(0x70, status);
        }
        self.write(0x14, 0);
        let accepted = low & self.read(0x10);
        self.write(0x24, 0);
        self.write(0x20, accepted);
        self.write(0x24, 1);
        self.write(0x20, 1);
        self.write(0x70, 0xb);
        for queue in 0..count {
            let base = VIRTIO_RINGS_32 + 0x400 * queue;
            self.write(0x30, queue);
            self.write(0x38, 16);
            for (register, addr) in [(0x80, base), (0x90, base + 0x100), (0xa0, base + 0x200)] {
                self.write(register, addr);
                self.write(register + 4, 0);
            }
            self.write(0x44, 1);
        }
        self.write(0x70, 0xf);
        accepted
    }
}

/// The driver's side of a virtio-mmio device as a stream: register writes and reads of
/// any offset and width, guest memory scribbled (rings included), notifications,
/// resets at any point, the VMM's pauses and resumes at any point, and the I/O
/// thread's turns, against an rng, a block device
/// (read-write or read-only) or a console. Nothing may panic, the device is either
/// serving or says it needs a reset, and a final reset leaves no event source and no
/// descriptor behind.
pub fn virtio_mmio(data: &[u8]) {
    let _one_at_a_time = one_at_a_time();
    let Some((&device, mut ops)) = data.split_first() else {
        return;
    };
    let device: Box<dyn VirtioDevice> = match device % 4 {
        0 => Box::new(Rng::new()),
        1 | 2 => {
            let readonly = device % 4 == 2;
            Box::new(Block::with_file(image(), 64 * 512, readonly, b"fuzz"))
        }
        _ => {
            let output = ConsoleOutput::new(SerialOutput::Sink).expect("an eventfd");
            Box::new(Console::new(Arc::new(output)).expect("an eventfd"))
        }
    };
    let mut rig = VirtioRig::new(device);
    let mut paused = false;
    while ops.len() >= 6 {
        let (op, rest) = ops.split_at(6);
        ops = rest;
        let offset = u64::from(u16::from_le_bytes([op[1], op[2]])) % 0x200;
        let value = u32::from_le_bytes([op[2], op[3], op[4], op[5]]);
        match op[0] % 8 {
            0 => rig.write(offset & !3, value),
            1 => {
                let width = [1usize, 2, 4, 8][usize::from(op[3] % 4)];
                let mut data = [0u8; 8];
                rig.transport.read(offset, &mut data[..width]);
            }
            2 => {
                let width = 1 + usize::from(op[3] % 4);
                rig.transport.write(offset, &value.to_le_bytes()[..width]);
            }
            3 => {
                let addr = GuestAddress(VIRTIO_RINGS + u64::from(op[1]) * 4 % 0x400);
                let _ = vm_memory::Bytes::write_obj(&*rig.memory, value, addr);
            }
            4 => rig.set_up_queue(),
            5 => rig.write(0x70, 0),
            6 => {
                if paused {
                    rig.transport.resume();
                } else {
                    rig.transport.pause();
                }
                paused = !paused;
            }
            _ => rig.settle(),
        }
    }
    rig.settle();
    let _ = rig.transport.status();
    rig.reset_and_check_nothing_is_left();
}

/// One virtio-blk request built from the input: the descriptor table, the request
/// headers and buffers, and the available ring, behind a properly set-up queue. The
/// device answers each chain (or refuses it) without panicking, and never lets a write
/// reach past the image's end.
pub fn virtio_blk(data: &[u8]) {
    let _one_at_a_time = one_at_a_time();
    const SECTORS: u64 = 64;
    if data.len() < 16 * 16 + 2 {
        return;
    }
    let (table, rest) = data.split_at(16 * 16);
    let (ring, buffers) = rest.split_at(2);
    let file = image();
    let readonly = ring[0] & 0x80 != 0;
    let block = Block::with_file(
        file.try_clone().expect("a dup"),
        SECTORS * 512,
        readonly,
        b"fuzz",
    );
    let mut rig = VirtioRig::new(Box::new(block));
    let memory = Arc::clone(&rig.memory);
    // Descriptors point into the buffer area (or wherever the input says, for the
    // out-of-RAM cases); buffer bytes become headers and data.
    let _ = vm_memory::Bytes::write_slice(&*memory, table, GuestAddress(VIRTIO_RINGS));
    let buffers = &buffers[..buffers.len().min(0x1_0000)];
    let _ = vm_memory::Bytes::write_slice(&*memory, buffers, GuestAddress(VIRTIO_BUFFERS));
    rig.set_up_queue();
    let offered = u16::from(ring[0] & 0x1f);
    for slot in 0..offered.min(16) {
        let head = (u16::from(ring[1]) + slot) % 16;
        let at = GuestAddress(VIRTIO_RINGS + 0x100 + 4 + 2 * u64::from(slot));
        let _ = vm_memory::Bytes::write_obj(&*memory, head, at);
    }
    let _ = vm_memory::Bytes::write_obj(&*memory, offered, GuestAddress(VIRTIO_RINGS + 0x100 + 2));
    rig.write(0x50, 0);
    rig.settle();
    // The disk serves on its worker: give it the time a small image needs.
    std::thread::sleep(std::time::Duration::from_millis(1));
    rig.reset_and_check_nothing_is_left();
    let size = file.metadata().expect("the image's size").len();
    assert_eq!(
        size,
        SECTORS * 512,
        "a write went past the end of the image"
    );
}

/// virtio-net's frame handling: the input holds both queues' descriptor tables and
/// buffers, the chains offered on each, the driver's choice of offloads (on a backend
/// that takes them, or one that does not) and frames arriving from the backend (a
/// datagram socket); the device moves what it can both ways. Nothing may panic, no
/// frame sent to the backend may be larger than a frame can be or ask for an offload
/// the driver did not negotiate, and no chain may be used with more bytes than it
/// holds.
pub fn virtio_net(data: &[u8]) {
    let _one_at_a_time = one_at_a_time();
    if data.len() < 2 * 16 * 16 + 8 {
        return;
    }
    let (tables, rest) = data.split_at(2 * 16 * 16);
    let (offers, rest) = rest.split_at(4);
    let (features, rest) = rest.split_at(4);
    let features = u32::from_le_bytes(features.try_into().expect("4 bytes"));
    let (device_end, peer) = UnixDatagram::pair().expect("a socket pair");
    peer.set_nonblocking(true).expect("non-blocking");
    let mut backend = DatagramBackend::new(device_end).expect("non-blocking");
    // Bit 31 (a feature of no network device): a backend that takes offloads.
    if features & (1 << 31) != 0 {
        backend = backend.with_offloads();
    }
    let mut rig = VirtioRig::new(Box::new(Net::new(backend, [0x52, 0x54, 0, 0, 0, 1])));
    let memory = Arc::clone(&rig.memory);
    // Queue 0 (receive) at VIRTIO_RINGS, queue 1 (transmit) at VIRTIO_RINGS + 0x400.
    for (queue, table) in (0u64..).zip(tables.chunks_exact(256).take(2)) {
        let _ = vm_memory::Bytes::write_slice(
            &*memory,
            table,
            GuestAddress(VIRTIO_RINGS + queue * 0x400),
        );
    }
    let buffers = &rest[..rest.len().min(0x1_0000)];
    let _ = vm_memory::Bytes::write_slice(&*memory, buffers, GuestAddress(VIRTIO_BUFFERS));
    // Frames from the backend: the same bytes, cut into up to four datagrams.
    for chunk in buffers.chunks(buffers.len() / 4 + 1).take(4) {
        let _ = peer.send(chunk);
    }
    let negotiated = Offloads::negotiated(u64::from(rig.set_up_queues_with(2, features)));
    for (queue, offer) in (0u32..).zip(offers.chunks_exact(2)) {
        let count = u16::from(offer[0] % 17);
        let first = offer[1];
        let avail = VIRTIO_RINGS + u64::from(queue) * 0x400 + 0x100;
        for slot in 0..count {
            let head = (u16::from(first) + slot) % 16;
            let _ = vm_memory::Bytes::write_obj(
                &*memory,
                head,
                GuestAddress(avail + 4 + 2 * u64::from(slot)),
            );
        }
        let _ = vm_memory::Bytes::write_obj(&*memory, count, GuestAddress(avail + 2));
        rig.write(0x50, queue);
    }
    rig.settle();
    let mut frame = vec![0u8; 1 << 17];
    while let Ok(len) = peer.recv(&mut frame) {
        assert!(len <= 65535 + 12 + 18, "a {len}-byte frame went out");
        let header = frame.first_chunk().expect("a frame has its header");
        assert!(
            negotiated.allows_transmit(header),
            "a frame asking for {:?} went out with {negotiated:?}",
            &header[..2]
        );
    }
    rig.reset_and_check_nothing_is_left();
}

/// A 64-sector in-memory image.
fn image() -> File {
    // SAFETY: a NUL-terminated name; memfd_create returns a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(c"kvmkit-fuzz-image".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    file.set_len(64 * 512).expect("the image's size");
    file
}

/// Guest memory the kernel loaders write into, reused across runs.
fn boot_memory() -> &'static vm_memory::GuestMemoryMmap<()> {
    static MEMORY: std::sync::OnceLock<vm_memory::GuestMemoryMmap<()>> = std::sync::OnceLock::new();
    MEMORY.get_or_init(|| {
        vm_memory::GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 20)])
            .expect("64 MiB of guest memory")
    })
}

/// Loads `image` with a small initrd and a command line into 64 MiB of guest memory:
/// any outcome but a panic is fine, and an accepted image enters where the protocol
/// says (at or above 1 MiB).
fn load_kernel(image: Vec<u8>) {
    use kvmkit_boot::{BootImage, LinuxBoot, PhysicalLayout};
    let layout = PhysicalLayout::new(&[(0, 64 << 20)]).expect("a layout");
    let boot = LinuxBoot::from_bytes(image)
        .initrd_bytes(vec![0x5a; 4096])
        .cmdline("console=ttyS0");
    if let Ok(entry) = boot.load(boot_memory(), &layout, 2) {
        assert!(
            entry.entry >= kvmkit_boot::x86::HIGH_MEMORY_START,
            "{entry:?}"
        );
    }
}

/// A kernel image as the bzImage loader sees it: the input with the setup header's
/// "HdrS" magic in place (so the fuzzer spends its time past the format check).
pub fn bzimage(data: &[u8]) {
    let _one_at_a_time = one_at_a_time();
    let mut image = data.to_vec();
    if image.len() >= 0x206 {
        image[0x202..0x206].copy_from_slice(b"HdrS");
    }
    load_kernel(image);
}

/// A kernel image as the ELF (and PVH) loader sees it: the input behind a 64-bit
/// little-endian x86-64 ELF identification.
pub fn elf(data: &[u8]) {
    let _one_at_a_time = one_at_a_time();
    let mut image = data.to_vec();
    if image.len() >= 20 {
        image[..6].copy_from_slice(b"\x7fELF\x02\x01");
        image[18..20].copy_from_slice(&62u16.to_le_bytes());
    }
    load_kernel(image);
}

/// A `kvmkit` command line, one argument per line: parsing never panics, and what
/// parses holds only values the runner can use (1 to 255 vCPUs, a memory size, disks
/// with a path, a unicast MAC).
pub fn cli_options(data: &[u8]) {
    let _one_at_a_time = one_at_a_time();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let args = std::iter::once("kvmkit").chain(text.split('\n'));
    let Ok(options) = kvmkit_cli::options::Options::from_args(args) else {
        return;
    };
    assert!((1..=255).contains(&options.cpus), "{options:?}");
    assert!(options.memory.size.is_some(), "{options:?}");
    assert!(options
        .disk
        .iter()
        .all(|disk| !disk.path.as_os_str().is_empty()));
    for net in &options.net {
        assert!(net.mac.is_none_or(|mac| mac[0] & 1 == 0), "{options:?}");
        assert!(
            net.tap
                .as_ref()
                .is_none_or(|tap| !tap.is_empty() && tap.len() < 16),
            "{options:?}"
        );
        assert!(
            net.host.is_none_or(|(_, mask)| {
                let bits = u32::from(mask);
                bits.leading_ones() + bits.trailing_zeros() == 32
            }),
            "{options:?}"
        );
    }
    assert!(!options.rng.src.as_os_str().is_empty(), "{options:?}");
}

/// A client's bytes on the API socket, as the API thread takes them: arriving in
/// pieces, framed into requests, each routed to an endpoint or answered at once (a
/// `vm.create`'s VmConfig read as the runner reads it), and every answer written. Nothing may panic, every status is a real one, and what waits
/// for the rest of a request stays within the head and body limits.
pub fn api_request(data: &[u8]) {
    use kvmkit_api::http::{take_request, MAX_BODY, MAX_HEAD};
    use kvmkit_api::{parse, ApiResponse, Failure};
    let mut pending = Vec::new();
    for chunk in data.chunks(13) {
        pending.extend_from_slice(chunk);
        loop {
            match take_request(&mut pending) {
                Ok(Some(request)) => {
                    let response = match parse(&request.method, &request.path, &request.body) {
                        Ok(request) => {
                            if let kvmkit_api::ApiRequest::VmCreate(config) = &request {
                                // The runner's reading of a VmConfig: options or a reason.
                                if let Ok(options) = kvmkit_cli::vm_config::options(config) {
                                    assert!(options.kernel.is_some(), "{options:?}");
                                    assert!((1..=255).contains(&options.cpus), "{options:?}");
                                }
                            }
                            ApiResponse::failed(&request, Failure::Failed, &["fuzz"])
                        }
                        Err(response) => response,
                    };
                    let http = response.to_http();
                    assert!((200..600).contains(&http.status), "{http:?}");
                    let mut written = Vec::new();
                    http.write_to(&mut written)
                        .expect("a Vec takes any response");
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(pending.len() <= MAX_HEAD + MAX_BODY + chunk.len());
    }
}

/// A snapshot's state file as restore reads it: the header, the version, the
/// checksum, then the state. Nothing may panic; what parses has its vCPUs and RAM.
pub fn snapshot_state(data: &[u8]) {
    let path = std::path::Path::new("state.json");
    if let Ok(snapshot) = kvmkit::Snapshot::parse(data, path) {
        let _ = (
            snapshot.vcpu_count(),
            snapshot.memory_size(),
            snapshot.config(),
        );
    }
    // The same bytes behind a header whose checksum matches, so the state parser
    // itself is reached.
    let mut framed = format!(
        "kvmkit-snapshot {} {:016x}\n",
        kvmkit::snapshot::SNAPSHOT_VERSION,
        data.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, &byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    )
    .into_bytes();
    framed.extend_from_slice(data);
    if let Ok(snapshot) = kvmkit::Snapshot::parse(&framed, path) {
        let _ = (
            snapshot.vcpu_count(),
            snapshot.memory_size(),
            snapshot.config(),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Runs every file of `fuzz/corpus/<target>` through `harness`; a target with an
    /// empty corpus fails, so a corpus cannot silently go missing.
    fn replay(target: &str, harness: fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target);
        let mut replayed = 0;
        // Listed first, so that no directory stays open while the inputs run: the
        // virtio targets count this process's descriptors.
        let paths: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        for path in paths {
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| harness(&data));
            assert!(
                outcome.is_ok(),
                "{} fails the {target} harness",
                path.display()
            );
            replayed += 1;
        }
        assert!(replayed > 0, "{} is empty", dir.display());
    }

    #[test]
    fn memory_config_corpus_replays_clean() {
        replay("memory_config", super::memory_config);
    }

    #[test]
    fn bus_corpus_replays_clean() {
        replay("bus", super::bus);
    }

    #[test]
    fn legacy_devices_corpus_replays_clean() {
        replay("legacy_devices", super::legacy_devices);
    }

    #[test]
    fn virtio_mmio_corpus_replays_clean() {
        replay("virtio_mmio", super::virtio_mmio);
    }

    #[test]
    fn virtio_net_corpus_replays_clean() {
        replay("virtio_net", super::virtio_net);
    }

    #[test]
    fn virtio_blk_corpus_replays_clean() {
        replay("virtio_blk", super::virtio_blk);
    }

    #[test]
    fn bzimage_corpus_replays_clean() {
        replay("bzimage", super::bzimage);
    }

    #[test]
    fn elf_corpus_replays_clean() {
        replay("elf", super::elf);
    }

    #[test]
    fn cli_options_corpus_replays_clean() {
        replay("cli_options", super::cli_options);
    }

    #[test]
    fn snapshot_state_corpus_replays_clean() {
        replay("snapshot_state", super::snapshot_state);
    }

    #[test]
    fn api_request_corpus_replays_clean() {
        replay("api_request", super::api_request);
    }
}
