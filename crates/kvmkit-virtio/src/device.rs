// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The seam through which a VMM adds device types: [`VirtioDevice`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use kvmkit_devices::EventSources;
use virtio_queue::Queue;
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::{DeviceFault, VirtioInterrupt};

/// The guest memory devices read and write: with a dirty bitmap that their writes
/// mark, so that migration sees the pages devices wrote beside the ones the guest did.
pub type GuestMemory = GuestMemoryMmap<AtomicBitmap>;

/// A virtio device behind a transport.
///
/// The transport calls these on the thread of the vCPU that touched its registers.
/// `read_config` and `write_config` must not wait for queue work: a device serves its
/// queues on the I/O thread, from the event sources it adds in `activate`.
pub trait VirtioDevice: Send {
    /// The virtio device type (`VIRTIO_ID_*`).
    fn device_type(&self) -> u32;
    /// The feature bits offered, `VIRTIO_F_VERSION_1` included.
    fn features(&self) -> u64;
    /// The most descriptors each queue may hold, one entry per queue; each a power of
    /// two.
    fn queue_max_sizes(&self) -> Vec<u16>;
    /// Reads the device-specific configuration space at `offset`; bytes past its end
    /// read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the configuration space; most devices ignore it.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let _ = (offset, data);
    }
    /// Starts serving the queues the driver set up (on `DRIVER_OK`).
    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError>;
    /// Stops serving the queues and returns to the state before activation. When it
    /// returns, no work of the old activation touches guest memory or raises the
    /// interrupt again ([`DeviceLifecycle::reset`](crate::DeviceLifecycle::reset));
    /// sources the device added to the event loop remove themselves on their next
    /// event.
    fn reset(&mut self);
    /// Stops the device's queue work and returns once none runs: until
    /// [`resume`](Self::resume), nothing is taken from the queues, written to guest
    /// memory or interrupted, and what arrives meanwhile (chains, host input) waits
    /// ([`DeviceLifecycle::pause`](crate::DeviceLifecycle::pause)). A VM's pause calls
    /// it after its vCPUs stopped; a snapshot saves a device only when paused.
    fn pause(&mut self);
    /// Lets the queue work run again; the transport then signals every queue, so that
    /// what the driver posted while paused is served.
    fn resume(&mut self);
    /// Per-queue counters, in queue order.
    fn counters(&self) -> Vec<Arc<QueueCounters>>;
}

/// Reads `data` from a device's configuration space `config` at `offset`, as
/// [`VirtioDevice::read_config`] says: bytes past its end read as zero.
///
/// ```
/// let config = [1u8, 2, 3];
/// let mut data = [0xffu8; 4];
/// kvmkit_virtio::read_config_from(&config, 1, &mut data);
/// assert_eq!(data, [2, 3, 0, 0]);
/// ```
pub fn read_config_from(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Some(rest) = usize::try_from(offset)
        .ok()
        .and_then(|start| config.get(start..))
    else {
        return;
    };
    let len = data.len().min(rest.len());
    data[..len].copy_from_slice(&rest[..len]);
}

/// What a device gets when the driver sets `DRIVER_OK`: built by a transport (this
/// crate's [`MmioTransport`](crate::MmioTransport), or another VMM's virtio-pci or
/// vhost-user frontend) with [`Activation::new`].
#[non_exhaustive]
pub struct Activation {
    /// Guest memory.
    pub memory: Arc<GuestMemory>,
    /// The features the driver accepted.
    pub features: u64,
    /// Each queue the driver set up, with the event fd a notification of it signals.
    pub queues: Vec<ActiveQueue>,
    /// The device's interrupt.
    pub interrupt: Arc<dyn VirtioInterrupt>,
    /// Set when the device can serve no more until reset.
    pub fault: Arc<DeviceFault>,
    /// Where the device adds its event sources (the I/O thread's loop).
    pub events: Arc<dyn EventSources>,
}

impl Activation {
    /// What a transport hands a device on `DRIVER_OK`: the driver's accepted
    /// `features` and ready `queues`, the device's `interrupt` and `fault` flag, and
    /// the `events` its queue work is served from.
    pub fn new(
        memory: Arc<GuestMemory>,
        features: u64,
        queues: Vec<ActiveQueue>,
        interrupt: Arc<dyn VirtioInterrupt>,
        fault: Arc<DeviceFault>,
        events: Arc<dyn EventSources>,
    ) -> Self {
        Activation {
            memory,
            features,
            queues,
            interrupt,
            fault,
            events,
        }
    }

    /// Takes queue `index` out of the activation, or says the driver did not set it up.
    pub fn take_queue(&mut self, index: u16) -> Result<ActiveQueue, ActivateError> {
        let position = self.queues.iter().position(|q| q.index == index);
        position
            .map(|i| self.queues.swap_remove(i))
            .ok_or(ActivateError::MissingQueue(index))
    }
}

/// One queue the driver set up.
#[non_exhaustive]
pub struct ActiveQueue {
    /// Its index.
    pub index: u16,
    /// The queue, ready and checked against guest memory.
    pub queue: Queue,
    /// Signalled when the driver notifies the queue.
    pub notifier: Arc<EventFd>,
}

impl ActiveQueue {
    /// Queue `index`, set up by the driver as `queue` (ready, its rings checked to lie
    /// in guest memory), whose notifications signal `notifier`.
    pub fn new(index: u16, queue: Queue, notifier: Arc<EventFd>) -> Self {
        ActiveQueue {
            index,
            queue,
            notifier,
        }
    }
}

/// Why a device could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActivateError {
    /// The device needs more queues than the driver set up.
    #[error("the device needs queue {0}, which the driver did not set up")]
    MissingQueue(u16),
    /// The event loop refused a source.
    #[error("cannot watch the queue notifications")]
    Events(#[source] std::io::Error),
    /// The queue's worker thread could not be started.
    #[error("cannot start the queue's worker thread")]
    Worker(#[source] std::io::Error),
}

/// What one queue of a device did, counted as it happened.
#[derive(Debug, Default)]
pub struct QueueCounters {
    requests: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
}

impl QueueCounters {
    /// Requests completed (successfully or not).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Bytes moved between guest memory and the backend.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Requests refused: malformed descriptor chains, backend errors, bad rings.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    // Only the thread serving the queue writes its counters, so an increment is a
    // plain load and store (no locked instruction per request); anyone may read them.
    pub(crate) fn add_request(&self, bytes: u64) {
        increment(&self.requests, 1);
        increment(&self.bytes, bytes);
    }

    pub(crate) fn add_error(&self) {
        increment(&self.errors, 1);
    }
}

fn increment(counter: &AtomicU64, by: u64) {
    counter.store(counter.load(Ordering::Relaxed) + by, Ordering::Relaxed);
}

impl std::fmt::Display for QueueCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "requests={} bytes={} errors={}",
            self.requests(),
            self.bytes(),
            self.errors()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::read_config_from;

    #[test]
    fn a_config_read_past_the_end_or_at_an_absurd_offset_reads_zeroes() {
        let config = [1u8, 2, 3];
        let mut at_end = [0xffu8; 2];
        let mut absurd = [0xffu8; 2];

        read_config_from(&config, 3, &mut at_end);
        read_config_from(&config, u64::MAX, &mut absurd);

        assert_eq!(at_end, [0, 0]);
        assert_eq!(absurd, [0, 0]);
    }
}
