// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A driver made of register writes, rings laid out by virtio-queue's mock, and an
//! event loop on its own thread: a hostile guest's side of a virtio-mmio device.

#![allow(dead_code)]
// Test code: the values cast are small constants and sizes this file chose (queue
// slots, sector numbers, test buffer lengths), which its own assertions would catch
// truncating.
#![allow(clippy::cast_possible_truncation)]

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use kvmkit_devices::{event_fd, BusDevice, EventLoop, Flow, LoopEnd, VmShutdown};
use kvmkit_virtio::{
    EventFdVirtioInterrupt, GuestMemory, MmioTransport, NoShortcut, QueueNotifiers, VirtioDevice,
    VirtioInterrupt,
};
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_F_VERSION_1,
};
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

pub const RAM: u64 = 0x10_0000;
pub const BASE: u64 = 0xd000_0000;
pub const RINGS: u64 = 0x8000;
pub const MOCK_SIZE: u16 = 16;
pub const PATIENCE: Duration = Duration::from_secs(10);

pub const STATUS: u64 = 0x70;
pub const QUEUE_SEL: u64 = 0x30;
pub const QUEUE_NUM_MAX: u64 = 0x34;
pub const QUEUE_NUM: u64 = 0x38;
pub const QUEUE_READY: u64 = 0x44;
pub const QUEUE_NOTIFY: u64 = 0x50;
pub const INTERRUPT_STATUS: u64 = 0x60;
pub const INTERRUPT_ACK: u64 = 0x64;
pub const NEEDS_RESET: u32 = 64;

pub fn desc(addr: u64, len: u32, flags: u32, next: u16) -> RawDescriptor {
    RawDescriptor::from(Descriptor::new(addr, len, flags as u16, next))
}

/// A device behind a transport, an event loop serving it, and the driver's side.
pub struct Rig {
    pub memory: Arc<GuestMemory>,
    pub transport: Arc<MmioTransport>,
    pub interrupt: Arc<EventFdVirtioInterrupt>,
    stop: EventFd,
    event_loop: Option<JoinHandle<LoopEnd>>,
}

impl Rig {
    pub fn new(device: Box<dyn VirtioDevice>) -> Self {
        Self::with_shortcut(device, Arc::new(NoShortcut))
    }

    pub fn with_shortcut(device: Box<dyn VirtioDevice>, shortcut: Arc<dyn QueueNotifiers>) -> Self {
        Self::with(device, shortcut, RAM)
    }

    /// A rig with `ram` bytes of guest memory (RAM by default).
    pub fn with_ram(device: Box<dyn VirtioDevice>, ram: u64) -> Self {
        Self::with(device, Arc::new(NoShortcut), ram)
    }

    fn with(device: Box<dyn VirtioDevice>, shortcut: Arc<dyn QueueNotifiers>, ram: u64) -> Self {
        let memory =
            Arc::new(GuestMemory::from_ranges(&[(GuestAddress(0), ram as usize)]).unwrap());
        let mut event_loop = EventLoop::new(Arc::new(VmShutdown::new().unwrap())).unwrap();
        let interrupt = Arc::new(EventFdVirtioInterrupt::new().unwrap());
        let transport = Arc::new(MmioTransport::new(
            device,
            BASE,
            Arc::clone(&memory),
            interrupt.clone(),
            Arc::new(event_loop.handle()),
            shortcut,
        ));
        let stop = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        event_loop.add(event_fd(&stop), || Flow::Stop).unwrap();
        let event_loop = Some(std::thread::spawn(move || event_loop.run().unwrap()));
        Rig {
            memory,
            transport,
            interrupt,
            stop,
            event_loop,
        }
    }

    /// Whether the event loop's thread ended by a panic within `patience` (it is not
    /// asked to stop).
    pub fn event_loop_panicked(&mut self, patience: Duration) -> bool {
        let begun = std::time::Instant::now();
        while self
            .event_loop
            .as_ref()
            .is_some_and(|thread| !thread.is_finished())
            && begun.elapsed() < patience
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        match self.event_loop.take() {
            Some(thread) if thread.is_finished() => thread.join().is_err(),
            other => {
                self.event_loop = other;
                false
            }
        }
    }

    pub fn write(&self, offset: u64, value: u32) {
        self.transport.write(offset, &value.to_le_bytes());
    }

    pub fn read(&self, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        self.transport.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    /// ACKNOWLEDGE, DRIVER, the features, FEATURES_OK; returns the status read back.
    pub fn negotiate(&self, features: u64) -> u32 {
        self.write(STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
        self.write(STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
        for (select, half) in [(0u32, features as u32), (1, (features >> 32) as u32)] {
            self.write(0x24, select);
            self.write(0x20, half);
        }
        self.write(
            STATUS,
            VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK,
        );
        self.read(STATUS)
    }

    /// Sets queue `index` up with the rings of `mock`.
    pub fn setup_queue(&self, index: u32, mock: &Rings, size: u32) {
        self.write(QUEUE_SEL, index);
        self.write(QUEUE_NUM, size);
        for (offset, addr) in [
            (0x80, mock.desc_table_addr()),
            (0x90, mock.avail_addr()),
            (0xa0, mock.used_addr()),
        ] {
            self.write(offset, addr.0 as u32);
            self.write(offset + 4, (addr.0 >> 32) as u32);
        }
        self.write(QUEUE_READY, 1);
    }

    pub fn driver_ok(&self) {
        self.write(
            STATUS,
            VIRTIO_CONFIG_S_ACKNOWLEDGE
                | VIRTIO_CONFIG_S_DRIVER
                | VIRTIO_CONFIG_S_FEATURES_OK
                | VIRTIO_CONFIG_S_DRIVER_OK,
        );
    }

    /// Zeroed rings of [`MOCK_SIZE`] entries at [`RINGS`].
    pub fn mock(&self) -> Rings {
        self.mock_at(RINGS)
    }

    /// Zeroed rings of [`MOCK_SIZE`] entries at `addr`, for a second queue.
    pub fn mock_at(&self, addr: u64) -> Rings {
        self.memory
            .write_slice(&[0u8; 0x400], GuestAddress(addr))
            .unwrap();
        Rings {
            memory: Arc::clone(&self.memory),
            desc: GuestAddress(addr),
            avail: GuestAddress(addr + 16 * u64::from(MOCK_SIZE)),
            used: GuestAddress(addr + 16 * u64::from(MOCK_SIZE) + 0x100),
        }
    }

    /// Offers chains whose heads are `heads`, after those offered so far.
    pub fn offer(&self, mock: &Rings, heads: &[u16]) {
        let start = mock.avail_idx();
        for (n, head) in heads.iter().enumerate() {
            let slot = (u64::from(start) + n as u64) % u64::from(MOCK_SIZE);
            let at = GuestAddress(mock.avail.0 + 4 + 2 * slot);
            self.memory.write_obj(*head, at).unwrap();
        }
        mock.set_avail_idx(start.wrapping_add(heads.len() as u16));
    }

    /// Waits for the device's interrupt; false after PATIENCE.
    pub fn wait_interrupt(&self) -> bool {
        wait_readable(self.interrupt.event(), PATIENCE) && self.interrupt.event().read().is_ok()
    }

    /// Used ring entries so far: (head, length).
    pub fn used(&self, mock: &Rings) -> Vec<(u32, u32)> {
        let count: u16 = self.memory.read_obj(GuestAddress(mock.used.0 + 2)).unwrap();
        (0..u64::from(count))
            .map(|n| {
                let at = mock.used.0 + 4 + 8 * (n % u64::from(MOCK_SIZE));
                let head: u32 = self.memory.read_obj(GuestAddress(at)).unwrap();
                let len: u32 = self.memory.read_obj(GuestAddress(at + 4)).unwrap();
                (head, len)
            })
            .collect()
    }

    pub fn read_bytes(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut data = vec![0u8; len];
        self.memory
            .read_slice(&mut data, GuestAddress(addr))
            .unwrap();
        data
    }
}

/// A split queue's descriptor table and rings in guest memory, laid out by the test
/// (each in room of its own), as a driver would.
pub struct Rings {
    memory: Arc<GuestMemory>,
    desc: GuestAddress,
    avail: GuestAddress,
    used: GuestAddress,
}

impl Rings {
    /// The descriptor table, to store descriptors in.
    pub fn desc_table(&self) -> &Self {
        self
    }

    /// Stores descriptor `index`.
    pub fn store(
        &self,
        index: u16,
        descriptor: RawDescriptor,
    ) -> Result<(), vm_memory::GuestMemoryError> {
        let at = GuestAddress(self.desc.0 + 16 * u64::from(index));
        self.memory.write_obj(descriptor, at)
    }

    pub fn desc_table_addr(&self) -> GuestAddress {
        self.desc
    }

    pub fn avail_addr(&self) -> GuestAddress {
        self.avail
    }

    pub fn used_addr(&self) -> GuestAddress {
        self.used
    }

    pub fn avail_idx(&self) -> u16 {
        self.memory
            .read_obj(GuestAddress(self.avail.0 + 2))
            .unwrap()
    }

    pub fn set_avail_idx(&self, idx: u16) {
        self.memory
            .write_obj(idx, GuestAddress(self.avail.0 + 2))
            .unwrap();
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(event_loop) = self.event_loop.take() {
            let _ = event_loop.join();
        }
    }
}

/// Whether `event` is signalled within `timeout`.
pub fn wait_readable(event: &EventFd, timeout: Duration) -> bool {
    kvmkit_devices::wait_readable(kvmkit_devices::event_fd(event), timeout)
}

/// An image file holding `contents`, open read-write and already unlinked, so that
/// nothing is left on disk however the test ends. `name` keeps tests apart.
pub fn scratch_image(name: &str, contents: &[u8]) -> std::fs::File {
    let path = std::env::temp_dir().join(format!("kvmkit-{name}-{}.img", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    file
}

pub fn version_1() -> u64 {
    1 << VIRTIO_F_VERSION_1
}

pub fn is_set(status: u32, bit: u32) -> bool {
    status & bit != 0
}

pub fn interrupt_status(rig: &Rig) -> u32 {
    rig.interrupt.status()
}
