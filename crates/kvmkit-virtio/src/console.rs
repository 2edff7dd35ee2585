// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! virtio-console (hvc) with one port: output to a [`ConsoleOutput`], input from the
//! same terminal handling as the serial console ([`ConsoleInput`]).

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use kvmkit_devices::{ConsoleInput, ConsoleOutput, Flow};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_CONSOLE;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vm_memory::Bytes;
use vmm_sys_util::eventfd::EventFd;

use crate::queue::{Chain, ChainError, QueueRunner, Served};
use crate::{ActivateError, Activation, DeviceLifecycle, GuestMemory, QueueCounters, VirtioDevice};

/// Host input the console holds for the guest before it stops taking more.
pub const CONSOLE_INPUT_BYTES: usize = 4096;
/// The most bytes one transmit request moves to the output.
const TX_MAX_REQUEST: usize = 64 << 10;
const QUEUE_SIZE: u16 = 64;
const RECEIVE: u16 = 0;
const TRANSMIT: u16 = 1;

/// A virtio console with one port (no `VIRTIO_CONSOLE_F_MULTIPORT`): the guest's
/// `/dev/hvc0`. Its output goes to a [`ConsoleOutput`] (flushed by the I/O thread,
/// never blocking); its input comes through [`Console::input`].
pub struct Console {
    output: Arc<ConsoleOutput>,
    input: Arc<ConsoleInputPort>,
    lifecycle: DeviceLifecycle,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").finish_non_exhaustive()
    }
}

impl Console {
    /// A console writing to `output`.
    pub fn new(output: Arc<ConsoleOutput>) -> io::Result<Self> {
        Ok(Console {
            output,
            input: Arc::new(ConsoleInputPort {
                pending: Mutex::new(VecDeque::new()),
                ready: EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?,
                receive: Mutex::new(None),
            }),
            lifecycle: DeviceLifecycle::new(2),
        })
    }

    /// The console's input side, to feed host input to (the I/O thread's console
    /// input source takes it).
    pub fn input(&self) -> Arc<ConsoleInputPort> {
        Arc::clone(&self.input)
    }
}

/// A console's input side: host bytes wait here (up to [`CONSOLE_INPUT_BYTES`]) until
/// the driver offers receive buffers.
pub struct ConsoleInputPort {
    pending: Mutex<VecDeque<u8>>,
    ready: EventFd,
    receive: Mutex<Option<QueueRunner>>,
}

impl ConsoleInputPort {
    fn pending(&self) -> MutexGuard<'_, VecDeque<u8>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves pending input into the driver's receive buffers, as far as both go.
    fn deliver(&self) -> Flow {
        let mut receive = self.receive.lock().unwrap_or_else(|e| e.into_inner());
        let Some(runner) = receive.as_mut() else {
            return Flow::Continue;
        };
        let before = self.pending().len();
        let flow = runner.run(
            || !self.pending().is_empty(),
            |memory, chain| self.fill(memory, chain),
        );
        if flow == Flow::Remove {
            *receive = None;
        }
        if self.pending().len() < before {
            let _ = self.ready.write(1);
        }
        flow
    }

    fn fill(&self, memory: &GuestMemory, chain: Result<&Chain, ChainError>) -> Served {
        let Ok(chain) = chain else {
            return Served::FAILED;
        };
        if !chain.readable.is_empty() || chain.writable.is_empty() {
            return Served::FAILED;
        }
        let mut pending = self.pending();
        let mut written = 0usize;
        for buffer in &chain.writable {
            let take = (buffer.len as usize).min(pending.len());
            if take == 0 {
                break;
            }
            let bytes: Vec<u8> = pending.drain(..take).collect();
            if memory.write_slice(&bytes, buffer.addr).is_err() {
                return Served::FAILED;
            }
            written += take;
        }
        // At most CONSOLE_INPUT_BYTES.
        Served::done(u32::try_from(written).unwrap_or(u32::MAX), written as u64)
    }
}

impl ConsoleInput for ConsoleInputPort {
    fn input_room(&self) -> usize {
        CONSOLE_INPUT_BYTES - self.pending().len().min(CONSOLE_INPUT_BYTES)
    }

    fn enqueue_input(&self, input: &[u8]) -> io::Result<usize> {
        let taken = input.len().min(self.input_room());
        self.pending().extend(&input[..taken]);
        self.deliver();
        Ok(taken)
    }

    fn input_ready(&self) -> &EventFd {
        &self.ready
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_CONSOLE
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX)
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        // cols, rows and max_nr_ports mean nothing without their features.
        data.fill(0);
    }

    fn activate(&mut self, mut activation: Activation) -> Result<(), ActivateError> {
        let receive = activation.take_queue(RECEIVE)?;
        let transmit = activation.take_queue(TRANSMIT)?;
        let output = Arc::clone(&self.output);
        let mut scratch = vec![0u8; TX_MAX_REQUEST];
        self.lifecycle
            .serve_on_notify(&activation, transmit, move |memory, chain| {
                send(memory, chain, &output, &mut scratch)
            })?;
        let runner = self
            .lifecycle
            .runner(&activation, receive.index, receive.queue);
        *self.input.receive.lock().unwrap_or_else(|e| e.into_inner()) = Some(runner);
        // The driver's new receive buffers are the cue to deliver pending input.
        let input = Arc::clone(&self.input);
        self.lifecycle
            .watch(&activation, &receive.notifier, move || input.deliver())
    }

    fn reset(&mut self) {
        // Quiesce first: delivering input holds the receive lock during its turn.
        self.lifecycle.reset();
        *self.input.receive.lock().unwrap_or_else(|e| e.into_inner()) = None;
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

/// Moves a transmit chain's bytes to the output (at most TX_MAX_REQUEST of them).
fn send(
    memory: &GuestMemory,
    chain: Result<&Chain, ChainError>,
    output: &ConsoleOutput,
    scratch: &mut [u8],
) -> Served {
    let Ok(chain) = chain else {
        return Served::FAILED;
    };
    if !chain.writable.is_empty() {
        return Served::FAILED;
    }
    let mut sent = 0usize;
    for buffer in &chain.readable {
        let len = (buffer.len as usize).min(TX_MAX_REQUEST - sent);
        if len == 0 {
            break;
        }
        if memory.read_slice(&mut scratch[..len], buffer.addr).is_err() {
            return Served::FAILED;
        }
        output.push(&scratch[..len]);
        sent += len;
    }
    Served::done(0, sent as u64)
}
