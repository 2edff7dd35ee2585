// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The virtio-mmio transport, version 2 (virtio 1.x): the register window a driver
//! finds a device through, behind a [`BusDevice`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use kvmkit_devices::{BusDevice, EventSources};
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_F_VERSION_1,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

use crate::{
    Activation, ActiveQueue, DeviceFault, GuestMemory, InterruptKind, QueueNotifiers, VirtioDevice,
    VirtioInterrupt,
};

/// Bytes of the register window, configuration space included.
pub const MMIO_WINDOW: u64 = 0x1000;

const MAGIC_VALUE: u64 = 0x000;
const VERSION: u64 = 0x004;
const DEVICE_ID: u64 = 0x008;
const VENDOR_ID: u64 = 0x00c;
const DEVICE_FEATURES: u64 = 0x010;
const DEVICE_FEATURES_SEL: u64 = 0x014;
const DRIVER_FEATURES: u64 = 0x020;
const DRIVER_FEATURES_SEL: u64 = 0x024;
const QUEUE_SEL: u64 = 0x030;
const QUEUE_NUM_MAX: u64 = 0x034;
const QUEUE_NUM: u64 = 0x038;
const QUEUE_READY: u64 = 0x044;
/// The queue notify register's offset in the window.
pub const QUEUE_NOTIFY: u64 = 0x050;
const INTERRUPT_STATUS: u64 = 0x060;
const INTERRUPT_ACK: u64 = 0x064;
const STATUS: u64 = 0x070;
const QUEUE_DESC_LOW: u64 = 0x080;
const QUEUE_DESC_HIGH: u64 = 0x084;
const QUEUE_AVAIL_LOW: u64 = 0x090;
const QUEUE_AVAIL_HIGH: u64 = 0x094;
const QUEUE_USED_LOW: u64 = 0x0a0;
const QUEUE_USED_HIGH: u64 = 0x0a4;
const CONFIG_GENERATION: u64 = 0x0fc;
const CONFIG: u64 = 0x100;

/// "virt", little-endian.
const MAGIC: u32 = 0x7472_6976;
/// "KVMK": kvmkit's vendor id.
const VENDOR: u32 = 0x4b4d_564b;

/// A transport's state (see [`MmioTransport::save_state`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TransportState {
    device_type: u32,
    status: u32,
    driver_features: u64,
    queues: Vec<QueueConfig>,
    interrupt_status: u32,
    faulted: bool,
}

impl TransportState {
    /// The virtio device type it was saved from.
    pub fn device_type(&self) -> u32 {
        self.device_type
    }

    /// The device status the driver had set.
    pub fn status(&self) -> u32 {
        self.status
    }
}

/// The low and high 32 bits of a ring's address, as the driver writes them.
// Each half is masked or shifted to exactly 32 bits: the casts keep every bit.
#[allow(clippy::cast_possible_truncation)]
fn halves(addr: u64) -> (Option<u32>, Option<u32>) {
    (Some((addr & 0xffff_ffff) as u32), Some((addr >> 32) as u32))
}

/// A queue as the driver set it up.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct QueueConfig {
    size: u16,
    ready: bool,
    desc: u64,
    avail: u64,
    used: u64,
}

/// Why a transport's state could not be restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportStateError {
    /// Saved from another device type, or restored into a transport in use.
    #[error("the state is of device type {saved}; this transport's is {here} (or it is in use)")]
    Mismatch {
        /// The saved device type.
        saved: u32,
        /// This transport's.
        here: u32,
    },
    /// Queues the device does not take, rings outside guest RAM, or features never
    /// offered.
    #[error("the state does not fit the device or guest memory")]
    Invalid,
    /// The device did not start with the restored queues.
    #[error("the device did not start with the restored queues")]
    Activation,
}

/// What a transport saw the driver do wrong, counted.
#[derive(Debug, Default)]
pub struct TransportCounters {
    refused_writes: AtomicU64,
    bad_notifies: AtomicU64,
    notifies: AtomicU64,
}

impl TransportCounters {
    /// Register writes refused: out of order, of the wrong width, to a queue that is
    /// live or does not exist, features never offered, queue sizes or addresses that
    /// do not fit.
    pub fn refused_writes(&self) -> u64 {
        self.refused_writes.load(Ordering::Relaxed)
    }

    /// Notifications of a queue that does not exist or is not live.
    pub fn bad_notifies(&self) -> u64 {
        self.bad_notifies.load(Ordering::Relaxed)
    }

    /// Notifications of a live queue that reached the transport as register writes
    /// (none do when the hypervisor's shortcut, an ioeventfd, takes them).
    pub fn notifies(&self) -> u64 {
        self.notifies.load(Ordering::Relaxed)
    }
}

struct State {
    device: Box<dyn VirtioDevice>,
    max_sizes: Vec<u16>,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: Vec<Queue>,
    /// Each live queue's notifier, by queue index, while the device is active.
    notifiers: Vec<Option<LiveNotifier>>,
}

/// A live queue's notifier, and whether the hypervisor's shortcut took it.
#[derive(Clone)]
struct LiveNotifier {
    event: Arc<EventFd>,
    registered: bool,
}

/// A virtio device behind the virtio-mmio register layout, version 2.
///
/// Register it on an MMIO bus at a window of [`MMIO_WINDOW`] bytes. The status state
/// machine is enforced: features are accepted only between `DRIVER` and
/// `FEATURES_OK`, and `FEATURES_OK` only for features that were offered (with
/// `VIRTIO_F_VERSION_1`); queues are set up only after `FEATURES_OK` and before
/// `DRIVER_OK`, with sizes up to the maximum and rings that are aligned and in guest
/// RAM; `DRIVER_OK` without `FEATURES_OK`, or with a device that cannot start, sets
/// `DEVICE_NEEDS_RESET`. Writing 0 to the status resets the device and withdraws its
/// notifiers.
pub struct MmioTransport {
    state: Mutex<State>,
    base: u64,
    memory: Arc<GuestMemory>,
    interrupt: Arc<dyn VirtioInterrupt>,
    fault: Arc<DeviceFault>,
    events: Arc<dyn EventSources>,
    shortcut: Arc<dyn QueueNotifiers>,
    counters: TransportCounters,
}

impl MmioTransport {
    /// `device` at guest-physical `base`, on `memory`, interrupting through
    /// `interrupt`, served by the event loop behind `events`, with queue notifications
    /// through `shortcut` where the hypervisor has one.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        base: u64,
        memory: Arc<GuestMemory>,
        interrupt: Arc<dyn VirtioInterrupt>,
        events: Arc<dyn EventSources>,
        shortcut: Arc<dyn QueueNotifiers>,
    ) -> Self {
        let max_sizes = device.queue_max_sizes();
        let queues = fresh_queues(&max_sizes);
        MmioTransport {
            state: Mutex::new(State {
                device,
                max_sizes,
                status: 0,
                device_features_sel: 0,
                driver_features_sel: 0,
                driver_features: 0,
                queue_sel: 0,
                queues,
                notifiers: Vec::new(),
            }),
            base,
            memory,
            interrupt,
            fault: Arc::new(DeviceFault::default()),
            events,
            shortcut,
            counters: TransportCounters::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the driver did wrong so far.
    pub fn counters(&self) -> &TransportCounters {
        &self.counters
    }

    /// The device's per-queue counters.
    pub fn queue_counters(&self) -> Vec<Arc<crate::QueueCounters>> {
        self.lock().device.counters()
    }

    /// Pauses the device ([`VirtioDevice::pause`]): returns once none of its queue
    /// work runs. Pause the vCPUs first, so that the driver does not wait on a device
    /// it is still talking to.
    pub fn pause(&self) {
        self.lock().device.pause();
    }

    /// Resumes the device ([`VirtioDevice::resume`]) and signals each live queue, so
    /// that chains the driver posted while it was paused are served.
    pub fn resume(&self) {
        let mut state = self.lock();
        state.device.resume();
        for notifier in state.notifiers.iter().flatten() {
            let _ = notifier.event.write(1);
        }
    }

    /// Resets the device as a driver's write of status 0 does (the VM reboots, say):
    /// once this returns, nothing of what the driver had set up touches guest memory
    /// or raises the interrupt, and the transport waits for a driver from scratch.
    pub fn reset_device(&self) {
        let mut state = self.lock();
        self.reset(&mut state);
    }

    /// The transport's state, for a snapshot: what the driver set up (status,
    /// features, each queue's size and rings) and how far each queue went. The device
    /// must be paused ([`pause`](Self::pause)), so that every chain it took is in the
    /// used ring: a queue's next available and next used entries are then both the
    /// used index the guest's memory holds, and chains posted meanwhile are served
    /// after the restore. The device itself holds no other state kvmkit's devices
    /// need (a console's host input waiting for the guest's buffers is not kept).
    pub fn save_state(&self) -> TransportState {
        let state = self.lock();
        let queues = state
            .queues
            .iter()
            .map(|queue| QueueConfig {
                size: queue.size(),
                ready: queue.ready(),
                desc: queue.desc_table(),
                avail: queue.avail_ring(),
                used: queue.used_ring(),
            })
            .collect();
        TransportState {
            device_type: state.device.device_type(),
            status: state.status,
            driver_features: state.driver_features,
            queues,
            interrupt_status: self.interrupt.status(),
            faulted: self.fault.is_set(),
        }
    }

    /// Puts `state` (saved by [`save_state`](Self::save_state) from a transport of
    /// the same device type) into this fresh transport, and starts the device as the
    /// driver had (its notifiers registered) if it was running. A state that does not
    /// fit (another device type, more queues or larger ones than the device takes,
    /// rings outside guest RAM, features never offered) is refused and the transport
    /// left as it was.
    pub fn restore_state(&self, saved: &TransportState) -> Result<(), TransportStateError> {
        let mut state = self.lock();
        let here = state.device.device_type();
        if saved.device_type != here || state.status != 0 {
            return Err(TransportStateError::Mismatch {
                saved: saved.device_type,
                here,
            });
        }
        if saved.queues.len() > state.max_sizes.len()
            || saved.driver_features & !state.device.features() != 0
        {
            return Err(TransportStateError::Invalid);
        }
        let mut queues = fresh_queues(&state.max_sizes);
        for ((queue, config), &max) in queues.iter_mut().zip(&saved.queues).zip(&state.max_sizes) {
            if config.size > max || !config.size.is_power_of_two() && config.size != 0 {
                return Err(TransportStateError::Invalid);
            }
            queue.set_size(config.size);
            let (low, high) = halves(config.desc);
            queue.set_desc_table_address(low, high);
            let (low, high) = halves(config.avail);
            queue.set_avail_ring_address(low, high);
            let (low, high) = halves(config.used);
            queue.set_used_ring_address(low, high);
            if config.ready {
                queue.set_ready(true);
                if !queue.is_valid(&*self.memory) {
                    return Err(TransportStateError::Invalid);
                }
                let used = queue
                    .used_idx(&*self.memory, std::sync::atomic::Ordering::Acquire)
                    .map_err(|_| TransportStateError::Invalid)?;
                queue.set_next_avail(used.0);
                queue.set_next_used(used.0);
            }
        }
        state.queues = queues;
        state.driver_features = saved.driver_features;
        state.status = saved.status & !VIRTIO_CONFIG_S_DRIVER_OK;
        if saved.faulted {
            self.fault.set();
        }
        if saved.status & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            state.status = saved.status;
            if !self.activate(&mut state) {
                return Err(TransportStateError::Activation);
            }
            // Chains the driver posted before the snapshot wait for a look, as after
            // a resume.
            for notifier in state.notifiers.iter().flatten() {
                let _ = notifier.event.write(1);
            }
        }
        for kind in [InterruptKind::UsedBuffer, InterruptKind::ConfigChange] {
            if saved.interrupt_status & kind.status_bit() != 0 {
                let _ = self.interrupt.signal(kind);
            }
        }
        Ok(())
    }

    /// The status the driver reads: what it wrote, plus `DEVICE_NEEDS_RESET` once
    /// the device faulted.
    pub fn status(&self) -> u32 {
        let status = self.lock().status;
        if self.fault.is_set() {
            status | VIRTIO_CONFIG_S_NEEDS_RESET
        } else {
            status
        }
    }

    fn refuse(&self) {
        self.counters.refused_writes.fetch_add(1, Ordering::Relaxed);
    }

    fn read_register(&self, offset: u64) -> u32 {
        let state = self.lock();
        match offset {
            MAGIC_VALUE => MAGIC,
            VERSION => 2,
            DEVICE_ID => state.device.device_type(),
            VENDOR_ID => VENDOR,
            DEVICE_FEATURES => match state.device_features_sel {
                0 => (state.device.features() & 0xffff_ffff) as u32,
                1 => (state.device.features() >> 32) as u32,
                _ => 0,
            },
            QUEUE_NUM_MAX => state
                .max_sizes
                .get(state.queue_sel as usize)
                .map_or(0, |&max| u32::from(max)),
            QUEUE_READY => state
                .queues
                .get(state.queue_sel as usize)
                .map_or(0, |queue| u32::from(queue.ready())),
            INTERRUPT_STATUS => self.interrupt.status(),
            STATUS => {
                drop(state);
                self.status()
            }
            CONFIG_GENERATION => 0,
            _ => 0,
        }
    }

    fn write_register(&self, offset: u64, value: u32) {
        let mut state = self.lock();
        let accepted = match offset {
            DEVICE_FEATURES_SEL => {
                state.device_features_sel = value;
                true
            }
            DRIVER_FEATURES_SEL => {
                state.driver_features_sel = value;
                true
            }
            DRIVER_FEATURES => self.set_driver_features(&mut state, value),
            QUEUE_SEL => {
                state.queue_sel = value;
                true
            }
            QUEUE_NUM => self.with_setup_queue(&mut state, |queue| {
                u16::try_from(value)
                    .ok()
                    .is_some_and(|size| queue.try_set_size(size).is_ok())
            }),
            QUEUE_READY => self.set_queue_ready(&mut state, value),
            QUEUE_DESC_LOW | QUEUE_DESC_HIGH | QUEUE_AVAIL_LOW | QUEUE_AVAIL_HIGH
            | QUEUE_USED_LOW | QUEUE_USED_HIGH => {
                self.with_setup_queue(&mut state, |queue| set_ring_address(queue, offset, value))
            }
            QUEUE_NOTIFY => {
                drop(state);
                self.notify(value);
                return;
            }
            INTERRUPT_ACK => {
                self.interrupt.acknowledge(value);
                true
            }
            STATUS => self.set_status(&mut state, value),
            _ => false,
        };
        if !accepted {
            self.refuse();
        }
    }

    fn set_driver_features(&self, state: &mut State, value: u32) -> bool {
        let negotiating = state.status & VIRTIO_CONFIG_S_DRIVER != 0
            && state.status & VIRTIO_CONFIG_S_FEATURES_OK == 0;
        let shift = match state.driver_features_sel {
            0 => 0,
            1 => 32,
            _ => return false,
        };
        if !negotiating {
            return false;
        }
        let mask = 0xffff_ffffu64 << shift;
        state.driver_features = (state.driver_features & !mask) | (u64::from(value) << shift);
        true
    }

    /// Runs `change` on the selected queue if queues may be set up now: after
    /// `FEATURES_OK`, before `DRIVER_OK`, while the queue is not live.
    fn with_setup_queue(&self, state: &mut State, change: impl FnOnce(&mut Queue) -> bool) -> bool {
        let setting_up = state.status & VIRTIO_CONFIG_S_FEATURES_OK != 0
            && state.status & VIRTIO_CONFIG_S_DRIVER_OK == 0;
        let index = state.queue_sel as usize;
        match state.queues.get_mut(index) {
            Some(queue) if setting_up && !queue.ready() => change(queue),
            _ => false,
        }
    }

    fn set_queue_ready(&self, state: &mut State, value: u32) -> bool {
        let memory = Arc::clone(&self.memory);
        self.with_setup_queue(state, |queue| match value {
            0 => true,
            1 => {
                queue.set_event_idx(false);
                queue.set_ready(true);
                if queue_fits(queue, &memory) {
                    true
                } else {
                    queue.set_ready(false);
                    false
                }
            }
            _ => false,
        })
    }

    fn set_status(&self, state: &mut State, value: u32) -> bool {
        if value == 0 {
            self.reset(state);
            return true;
        }
        let added = value & !state.status;
        if state.status & !value != 0 {
            // Bits are only ever added, except by a reset.
            return false;
        }
        if added & VIRTIO_CONFIG_S_FEATURES_OK != 0 && !self.features_acceptable(state) {
            // The device does not set FEATURES_OK: the driver reads it back and fails.
            state.status = value & !VIRTIO_CONFIG_S_FEATURES_OK;
            return false;
        }
        state.status = value;
        if added & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            return self.activate(state);
        }
        let known = VIRTIO_CONFIG_S_ACKNOWLEDGE
            | VIRTIO_CONFIG_S_DRIVER
            | VIRTIO_CONFIG_S_FEATURES_OK
            | VIRTIO_CONFIG_S_DRIVER_OK
            | VIRTIO_CONFIG_S_FAILED;
        value & !known == 0
    }

    fn features_acceptable(&self, state: &State) -> bool {
        let offered = state.device.features();
        let version_1 = 1u64 << VIRTIO_F_VERSION_1;
        state.driver_features & !offered == 0 && state.driver_features & version_1 != 0
    }

    /// On `DRIVER_OK`: hands the live queues to the device, with their notifiers
    /// registered; on any failure the device needs a reset.
    fn activate(&self, state: &mut State) -> bool {
        if state.status & VIRTIO_CONFIG_S_FEATURES_OK == 0 {
            self.fail();
            return false;
        }
        let event_idx = state.driver_features
            & (1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX)
            != 0;
        let mut queues = Vec::new();
        let mut notifiers = Vec::new();
        for (index, queue) in state.queues.iter_mut().enumerate() {
            if !queue.ready() {
                continue;
            }
            let Ok(notifier) = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) else {
                self.fail();
                return false;
            };
            let notifier = Arc::new(notifier);
            // max_sizes has an entry per queue, each addressed by a 32-bit QUEUE_SEL
            // and a 16-bit notify value: a device with more queues cannot start.
            let Ok(index) = u16::try_from(index) else {
                self.fail();
                return false;
            };
            queue.set_event_idx(event_idx);
            // The device gets its own copy; the transport keeps the setup to answer
            // the driver's reads until the reset.
            let Ok(copy) = Queue::try_from(queue.state()) else {
                self.fail();
                return false;
            };
            queues.push(ActiveQueue::new(index, copy, Arc::clone(&notifier)));
            notifiers.push((index, notifier));
        }
        // Each queue on its own: one the shortcut did not take is notified through
        // the register, and a reset withdraws exactly those it took.
        let addr = self.base + QUEUE_NOTIFY;
        state.notifiers = vec![None; state.queues.len()];
        for (index, event) in notifiers {
            let registered = matches!(self.shortcut.register(addr, index, &event), Ok(true));
            state.notifiers[usize::from(index)] = Some(LiveNotifier { event, registered });
        }
        let activation = Activation::new(
            Arc::clone(&self.memory),
            state.driver_features,
            queues,
            Arc::clone(&self.interrupt),
            Arc::clone(&self.fault),
            Arc::clone(&self.events),
        );
        if state.device.activate(activation).is_err() {
            self.fail();
            return false;
        }
        true
    }

    fn fail(&self) {
        self.fault.set();
        let _ = self.interrupt.signal(InterruptKind::ConfigChange);
    }

    fn reset(&self, state: &mut State) {
        state.device.reset();
        let addr = self.base + QUEUE_NOTIFY;
        for (index, notifier) in state.notifiers.iter().enumerate() {
            let (Some(notifier), Ok(index)) = (notifier, u16::try_from(index)) else {
                continue;
            };
            if notifier.registered {
                let _ = self.shortcut.unregister(addr, index, &notifier.event);
            }
            // Wakes the device's old handler, which sees the reset and removes itself.
            let _ = notifier.event.write(1);
        }
        state.notifiers.clear();
        state.queues = fresh_queues(&state.max_sizes);
        state.status = 0;
        state.device_features_sel = 0;
        state.driver_features_sel = 0;
        state.driver_features = 0;
        state.queue_sel = 0;
        self.interrupt.acknowledge(u32::MAX);
        self.fault.clear();
    }

    /// The driver wrote `queue` to the notify register (no shortcut, or it missed it).
    fn notify(&self, queue: u32) {
        let state = self.lock();
        let live = state.status & VIRTIO_CONFIG_S_DRIVER_OK != 0 && !self.fault.is_set();
        match state.notifiers.get(queue as usize) {
            Some(Some(notifier)) if live => {
                self.counters.notifies.fetch_add(1, Ordering::Relaxed);
                let _ = notifier.event.write(1);
            }
            _ => {
                self.counters.bad_notifies.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn fresh_queues(max_sizes: &[u16]) -> Vec<Queue> {
    max_sizes
        .iter()
        // The device promised powers of two up to 32768; a size that is not makes a
        // queue the driver cannot use (Queue::new refuses it, a 1-entry queue stands in).
        .map(|&max| {
            Queue::new(max)
                .or_else(|_| Queue::new(1))
                .expect("a 1-entry queue")
        })
        .collect()
}

/// Sets half of a ring address; refuses (and keeps the old address) one that is not
/// aligned as virtio 1.x requires: 16 bytes for the descriptor table, 2 for the
/// available ring, 4 for the used ring.
fn set_ring_address(queue: &mut Queue, offset: u64, value: u32) -> bool {
    let current = match offset {
        QUEUE_DESC_LOW | QUEUE_DESC_HIGH => queue.desc_table(),
        QUEUE_AVAIL_LOW | QUEUE_AVAIL_HIGH => queue.avail_ring(),
        _ => queue.used_ring(),
    };
    let address = if offset % 8 == 0 {
        (current & !0xffff_ffff) | u64::from(value)
    } else {
        (current & 0xffff_ffff) | (u64::from(value) << 32)
    };
    let address = GuestAddress(address);
    match offset {
        QUEUE_DESC_LOW | QUEUE_DESC_HIGH => queue.try_set_desc_table_address(address).is_ok(),
        QUEUE_AVAIL_LOW | QUEUE_AVAIL_HIGH => queue.try_set_avail_ring_address(address).is_ok(),
        _ => queue.try_set_used_ring_address(address).is_ok(),
    }
}

/// Whether a queue's rings lie in guest RAM, each within one memory region, as the
/// device reads them (their alignment was checked as they were written).
fn queue_fits(queue: &Queue, memory: &GuestMemory) -> bool {
    queue.is_valid(memory) && crate::ring::Ring::new(queue, memory).is_ok()
}

impl BusDevice for MmioTransport {
    fn read(&self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG {
            let state = self.lock();
            state.device.read_config(offset - CONFIG, data);
            return;
        }
        data.fill(0);
        if data.len() != 4 || offset % 4 != 0 {
            self.refuse();
            return;
        }
        data.copy_from_slice(&self.read_register(offset).to_le_bytes());
    }

    fn write(&self, offset: u64, data: &[u8]) {
        if offset >= CONFIG {
            let mut state = self.lock();
            state.device.write_config(offset - CONFIG, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            self.refuse();
            return;
        };
        if offset % 4 != 0 {
            self.refuse();
            return;
        }
        self.write_register(offset, u32::from_le_bytes(bytes));
    }
}

impl std::fmt::Debug for MmioTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioTransport")
            .field("base", &format_args!("{:#x}", self.base))
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}
