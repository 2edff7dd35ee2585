// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! virtio-rng: entropy from the host's `getrandom` into the guest's buffers.

use std::sync::Arc;

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vm_memory::Bytes;

use crate::queue::{Chain, ChainError, Served};
use crate::{ActivateError, Activation, DeviceLifecycle, GuestMemory, QueueCounters, VirtioDevice};

/// The most bytes one request gets: a guest cannot make the VMM allocate or draw
/// entropy without bound with one huge buffer.
pub const RNG_MAX_REQUEST: usize = 64 << 10;
const QUEUE_SIZE: u16 = 256;

/// A virtio entropy device: one queue of device-writable buffers, each filled (up to
/// [`RNG_MAX_REQUEST`] bytes) from `getrandom`.
#[derive(Debug)]
pub struct Rng {
    lifecycle: DeviceLifecycle,
}

impl Default for Rng {
    fn default() -> Self {
        Rng {
            lifecycle: DeviceLifecycle::new(1),
        }
    }
}

impl Rng {
    /// A new entropy device.
    pub fn new() -> Self {
        Self::default()
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX)
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn activate(&mut self, mut activation: Activation) -> Result<(), ActivateError> {
        let queue = activation.take_queue(0)?;
        let mut scratch = vec![0u8; RNG_MAX_REQUEST];
        self.lifecycle
            .serve_on_notify(&activation, queue, move |memory, chain| {
                fill(memory, chain, &mut scratch)
            })
    }

    fn reset(&mut self) {
        self.lifecycle.reset();
    }

    fn counters(&self) -> Vec<Arc<QueueCounters>> {
        self.lifecycle.counters()
    }
}

/// Fills the chain's writable buffers with random bytes, up to the request cap.
fn fill(memory: &GuestMemory, chain: Result<&Chain, ChainError>, scratch: &mut [u8]) -> Served {
    let Ok(chain) = chain else {
        return Served::FAILED;
    };
    if !chain.readable.is_empty() || chain.writable.is_empty() {
        return Served::FAILED;
    }
    let mut written = 0usize;
    for buffer in &chain.writable {
        let len = (buffer.len as usize).min(RNG_MAX_REQUEST - written);
        if len == 0 {
            break;
        }
        let bytes = &mut scratch[..len];
        if getrandom(bytes).is_err() || memory.write_slice(bytes, buffer.addr).is_err() {
            return Served {
                written: u32::try_from(written).unwrap_or(u32::MAX),
                bytes: written as u64,
                failed: true,
            };
        }
        written += len;
    }
    // At most RNG_MAX_REQUEST.
    Served::done(u32::try_from(written).unwrap_or(u32::MAX), written as u64)
}

fn getrandom(buffer: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buffer.len() {
        let rest = &mut buffer[filled..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`.
        let got = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if got < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        filled += got as usize;
    }
    Ok(())
}
