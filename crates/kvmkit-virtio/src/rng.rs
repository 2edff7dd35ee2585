// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! virtio-rng: entropy from the host's `getrandom` (or a file of the VMM's choosing)
//! into the guest's buffers.

use std::fs::File;
use std::io::Read;
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
/// [`RNG_MAX_REQUEST`] bytes) from `getrandom`, or from a file.
#[derive(Debug)]
pub struct Rng {
    lifecycle: DeviceLifecycle,
    source: Option<Arc<File>>,
}

impl Default for Rng {
    fn default() -> Self {
        Rng {
            lifecycle: DeviceLifecycle::new(1),
            source: None,
        }
    }
}

impl Rng {
    /// A new entropy device on `getrandom` (the kernel's `/dev/urandom` pool, with no
    /// descriptor held).
    pub fn new() -> Self {
        Self::default()
    }

    /// A new entropy device reading `source` (Cloud Hypervisor's `--rng src=`, a
    /// hardware RNG's `/dev/hwrng`, say). Open it non-blocking: a request gets what
    /// one read returns, so a source that has nothing (or has ended) completes the
    /// request short or empty rather than holding the thread that serves it.
    pub fn with_source(source: File) -> Self {
        Rng {
            source: Some(Arc::new(source)),
            ..Self::default()
        }
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
        let source = self.source.clone();
        self.lifecycle
            .serve_on_notify(&activation, queue, move |memory, chain| {
                fill(memory, chain, &mut scratch, |bytes| match &source {
                    Some(file) => (&**file).read(bytes),
                    None => getrandom(bytes).map(|()| bytes.len()),
                })
            })
    }

    fn reset(&mut self) {
        self.lifecycle.reset();
    }

    fn pause(&mut self) {
        self.lifecycle.pause();
    }

    fn resume(&mut self) {
        self.lifecycle.resume();
    }

    fn counters(&self) -> Vec<Arc<QueueCounters>> {
        self.lifecycle.counters()
    }
}

/// Fills the chain's writable buffers with random bytes from `source` (which returns
/// how many it put in the buffer it is given), up to the request cap; a source that
/// runs short ends the request there.
fn fill(
    memory: &GuestMemory,
    chain: Result<&Chain, ChainError>,
    scratch: &mut [u8],
    mut source: impl FnMut(&mut [u8]) -> std::io::Result<usize>,
) -> Served {
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
        let got = match source(&mut scratch[..len]) {
            Ok(got) => got.min(len),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(_) => return short(written, true),
        };
        if memory.write_slice(&scratch[..got], buffer.addr).is_err() {
            return short(written, true);
        }
        written += got;
        if got < len {
            return short(written, false);
        }
    }
    // At most RNG_MAX_REQUEST.
    Served::done(u32::try_from(written).unwrap_or(u32::MAX), written as u64)
}

/// A request that ends after `written` bytes.
fn short(written: usize, failed: bool) -> Served {
    Served {
        written: u32::try_from(written).unwrap_or(u32::MAX),
        bytes: written as u64,
        failed,
        continues: false,
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::Buffer;
    use vm_memory::GuestAddress;

    fn one_buffer(len: u32) -> (GuestMemory, Chain) {
        let memory = GuestMemory::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let chain = Chain {
            readable: vec![],
            writable: vec![Buffer {
                addr: GuestAddress(0x1000),
                len,
            }],
        };
        (memory, chain)
    }

    #[test]
    fn a_source_that_runs_short_completes_the_request_short() {
        let (memory, chain) = one_buffer(4096);
        let mut scratch = vec![0u8; RNG_MAX_REQUEST];

        let served = fill(&memory, Ok(&chain), &mut scratch, |bytes| {
            bytes[..10].fill(0xab);
            Ok(10)
        });

        assert_eq!((served.written, served.failed), (10, false));
        let mut head = [0u8; 11];
        memory.read_slice(&mut head, GuestAddress(0x1000)).unwrap();
        assert_eq!(
            head,
            [0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0]
        );
    }

    #[test]
    fn a_source_with_nothing_yet_completes_the_request_empty_and_a_broken_one_fails_it() {
        let (memory, chain) = one_buffer(64);
        let mut scratch = vec![0u8; RNG_MAX_REQUEST];

        let empty = fill(&memory, Ok(&chain), &mut scratch, |_| {
            Err(std::io::ErrorKind::WouldBlock.into())
        });
        let broken = fill(&memory, Ok(&chain), &mut scratch, |_| {
            Err(std::io::ErrorKind::BrokenPipe.into())
        });

        assert_eq!((empty.written, empty.failed), (0, false));
        assert!(broken.failed);
    }

    #[test]
    fn getrandom_fills_a_request_whole() {
        let (memory, chain) = one_buffer(u32::try_from(RNG_MAX_REQUEST * 2).unwrap());
        let mut scratch = vec![0u8; RNG_MAX_REQUEST];

        let served = fill(&memory, Ok(&chain), &mut scratch, |bytes| {
            getrandom(bytes).map(|()| bytes.len())
        });

        assert_eq!(served.written as usize, RNG_MAX_REQUEST);
    }
}
