// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! virtio-net: the device, its header and offloads, and its backends (a tap, a
//! datagram socket, or a VMM's own).

mod backend;
mod header;
mod tap;

pub use backend::{DatagramBackend, NetBackend};
pub use header::{Offloads, NET_HEADER_LEN};
pub use tap::{Tap, TapError};

use std::cell::RefCell;
use std::io;
use std::sync::{Arc, Mutex};

use kvmkit_devices::Flow;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::{VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vm_memory::Bytes;
use vmm_sys_util::eventfd::EventFd;

use crate::chain::write_into;
use crate::queue::{Buffer, Chain, ChainError, QueueRunner, Served};
use crate::{
    read_config_from, ActivateError, Activation, DeviceLifecycle, GuestMemory, QueueCounters,
    VirtioDevice,
};
use header::NUM_BUFFERS;

/// The largest frame with its header: a 64 KiB packet (a TCP super-frame, with
/// segmentation offload) plus Ethernet and VLAN headers.
const MAX_PACKET: usize = NET_HEADER_LEN + 65535 + 18;
const QUEUE_SIZE: u16 = 256;
/// The most reads from the backend one turn of the receive queue makes: a backend
/// that keeps handing short or empty frames cannot keep the I/O thread.
const RECEIVE_BUDGET: usize = QUEUE_SIZE as usize;
const RECEIVE: u16 = 0;
const TRANSMIT: u16 = 1;

/// A virtio network device on a [`NetBackend`] (a [`Tap`], usually): receive (queue 0)
/// and transmit (queue 1), both driven by the I/O thread, with the MAC address in the
/// configuration space, and on a backend that takes them ([`NetBackend::offloads`])
/// checksum and TCP segmentation offload both ways ([`Offloads`]), so that a guest's
/// TCP stream crosses in 64 KiB super-frames rather than MTU-sized ones. Mergeable
/// receive buffers (`VIRTIO_NET_F_MRG_RXBUF`) let a driver post page-sized buffers
/// that a super-frame spreads over, rather than 64 KiB ones per frame.
/// A frame that does not fit the tap's queue is dropped and counted; a frame from the
/// tap waits (and the tap is not read) until the driver offers receive buffers enough.
pub struct Net {
    tap: Arc<dyn NetBackend>,
    mac: [u8; 6],
    /// The offload features offered when the backend takes them.
    offloads: u64,
    lifecycle: DeviceLifecycle,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("mac", &self.mac)
            .finish_non_exhaustive()
    }
}

impl Net {
    /// A network device with address `mac` on `backend`.
    pub fn new(backend: impl NetBackend + 'static, mac: [u8; 6]) -> Self {
        let tap: Arc<dyn NetBackend> = Arc::new(backend);
        Net {
            tap,
            mac,
            offloads: Offloads::FEATURES,
            lifecycle: DeviceLifecycle::new(2),
        }
    }

    /// This device offering only the offloads among `features` (of
    /// [`Offloads::FEATURES`]), as Cloud Hypervisor's `offload_csum` and
    /// `offload_tso` choose: segmentation is offered only with checksum offload.
    ///
    /// ```
    /// # use std::os::unix::net::UnixDatagram;
    /// use kvmkit_virtio::{DatagramBackend, Net, Offloads, VirtioDevice};
    ///
    /// let (socket, _peer) = UnixDatagram::pair()?;
    /// let backend = DatagramBackend::new(socket)?.with_offloads();
    /// let net = Net::new(backend, [0x52, 0x54, 0, 0, 0, 1]).with_offloads(Offloads::TSO);
    /// assert_eq!(net.features() & Offloads::FEATURES, 0, "TSO without checksums");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_offloads(mut self, features: u64) -> Self {
        self.offloads = features & Offloads::FEATURES;
        if self.offloads & Offloads::CHECKSUM != Offloads::CHECKSUM {
            self.offloads &= !Offloads::TSO;
        }
        self
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn features(&self) -> u64 {
        let offloads = if self.tap.offloads() {
            self.offloads
        } else {
            0
        };
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_NET_F_MAC)
            | (1 << VIRTIO_NET_F_MRG_RXBUF)
            | offloads
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_from(&self.mac, offset, data);
    }

    fn activate(&mut self, mut activation: Activation) -> Result<(), ActivateError> {
        let receive = activation.take_queue(RECEIVE)?;
        let transmit = activation.take_queue(TRANSMIT)?;
        let offloads = Offloads::negotiated(activation.features);
        // The tap hands over only what the driver negotiated to receive.
        self.tap
            .set_offloads(offloads.tun_flags())
            .map_err(ActivateError::Events)?;
        let mut transmitter = Transmitter {
            runner: self
                .lifecycle
                .runner(&activation, transmit.index, transmit.queue),
            tap: Arc::clone(&self.tap),
            offloads,
            counters: self.lifecycle.queue_counters(TRANSMIT),
            frames: Vec::new(),
            ends: Vec::new(),
        };
        self.lifecycle
            .watch(&activation, &transmit.notifier, move || {
                transmitter.transmit()
            })?;
        let receiver = Arc::new(Mutex::new(Receiver {
            runner: self
                .lifecycle
                .runner(&activation, receive.index, receive.queue),
            tap: Arc::clone(&self.tap),
            offloads,
            mergeable: activation.features & (1 << VIRTIO_NET_F_MRG_RXBUF) != 0,
            wake: receive
                .notifier
                .try_clone()
                .map_err(ActivateError::Events)?,
            delivery: RefCell::new(Delivery::new()),
        }));
        // The tap is read while the driver has receive buffers; without them it is
        // left unread (paused) until the driver notifies the receive queue.
        self.lifecycle.watch_pausable(
            &activation,
            self.tap.as_fd(),
            &receive.notifier,
            move || {
                let mut receiver = receiver.lock().unwrap_or_else(|e| e.into_inner());
                receiver.receive()
            },
        )
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

/// The transmit side, on the I/O thread. A turn copies the driver's frames out of
/// guest memory and hands their chains back (interrupting if the driver asks) before
/// it writes the frames to the backend: the guest has its buffers back, and its TCP
/// its send budget, while the host's stack takes the frames rather than after.
struct Transmitter {
    runner: QueueRunner,
    tap: Arc<dyn NetBackend>,
    offloads: Offloads,
    counters: Arc<QueueCounters>,
    /// The frames of this turn (headers included), back to back, and where each ends:
    /// at most a turn's budget of bytes and one frame more.
    frames: Vec<u8>,
    ends: Vec<usize>,
}

impl Transmitter {
    fn transmit(&mut self) -> Flow {
        let Transmitter {
            runner,
            offloads,
            frames,
            ends,
            ..
        } = self;
        let flow = runner.run(
            || true,
            |memory, chain| take_frame(memory, chain, *offloads, frames, ends),
        );
        let mut start = 0;
        for &end in &self.ends {
            // A tap takes a frame whole or not at all; a full tap queue drops it, as
            // a congested link would.
            let frame = &self.frames[start..end];
            if !matches!(self.tap.send(frame), Ok(written) if written == frame.len()) {
                self.counters.add_error();
            }
            start = end;
        }
        self.frames.clear();
        self.ends.clear();
        flow
    }
}

/// Copies a transmit chain's frame (header included) to the end of `frames`, and
/// notes where it ends in `ends`.
fn take_frame(
    memory: &GuestMemory,
    chain: Result<&Chain, ChainError>,
    offloads: Offloads,
    frames: &mut Vec<u8>,
    ends: &mut Vec<usize>,
) -> Served {
    let start = frames.len();
    match copy_frame(memory, chain, offloads, frames) {
        Some(len) => {
            ends.push(frames.len());
            Served::done(0, (len - NET_HEADER_LEN) as u64)
        }
        None => {
            frames.truncate(start);
            Served::FAILED
        }
    }
}

/// [`take_frame`]'s copy: the frame's length, or `None` for a chain that is no frame
/// or one asking for an offload the driver never negotiated (the tap would have the
/// host kernel checksum or segment it on the guest's behalf).
fn copy_frame(
    memory: &GuestMemory,
    chain: Result<&Chain, ChainError>,
    offloads: Offloads,
    frames: &mut Vec<u8>,
) -> Option<usize> {
    let chain = chain.ok().filter(|chain| chain.writable.is_empty())?;
    let len: usize = chain.readable.iter().map(|b| b.len as usize).sum();
    if len <= NET_HEADER_LEN || len > MAX_PACKET {
        return None;
    }
    let start = frames.len();
    frames.resize(start + len, 0);
    let mut at = start;
    for buffer in &chain.readable {
        let end = at + buffer.len as usize;
        memory.read_slice(&mut frames[at..end], buffer.addr).ok()?;
        at = end;
    }
    let header = frames[start..].first_chunk::<NET_HEADER_LEN>()?;
    offloads.allows_transmit(header).then_some(len)
}

/// The receive side, on the I/O thread.
struct Receiver {
    runner: QueueRunner,
    tap: Arc<dyn NetBackend>,
    offloads: Offloads,
    /// The driver took `VIRTIO_NET_F_MRG_RXBUF`: a frame may spread over chains.
    mergeable: bool,
    /// The receive queue's notifier, which runs this again on the loop's next turn.
    wake: EventFd,
    delivery: RefCell<Delivery>,
}

impl Receiver {
    /// Moves frames from the tap into receive buffers until either runs out; pauses
    /// the tap while a frame waits for a buffer.
    fn receive(&mut self) -> Flow {
        let mut reads = 0;
        loop {
            let delivery = self.delivery.get_mut();
            if delivery.frame().is_none() {
                if reads == RECEIVE_BUDGET {
                    // The rest on the loop's next turn, after its other sources.
                    return Flow::Continue;
                }
                reads += 1;
                match self.tap.receive(&mut delivery.buffer) {
                    Ok(len) if len > NET_HEADER_LEN => {
                        let header = delivery.buffer.first_chunk_mut().expect("a frame's room");
                        // Frames that need what the driver did not negotiate are dropped.
                        if self.offloads.for_the_driver(header) {
                            delivery.len = len;
                        }
                    }
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // WouldBlock: the tap is empty. Anything else: the tap went away.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flow::Continue,
                    Err(_) => return Flow::Remove,
                }
            }
            let Receiver {
                runner,
                delivery,
                mergeable,
                ..
            } = self;
            let flow = runner.run(
                || delivery.borrow().frame().is_some(),
                |memory, chain| deliver(memory, chain, &mut delivery.borrow_mut(), *mergeable),
            );
            // A frame left half delivered had its chains given back: it starts over.
            delivery.get_mut().start_over();
            let waiting = delivery.get_mut().frame().is_some();
            match flow {
                Flow::Remove => return Flow::Remove,
                // The turn's budget is spent with buffers left (or more came as the
                // frame ran out of them): go on after the loop's other sources.
                Flow::Pause if waiting => {
                    let _ = self.wake.write(1);
                    return Flow::Continue;
                }
                // Out of receive buffers with a frame waiting: wait for the driver.
                _ if waiting => return Flow::Pause,
                _ => {}
            }
        }
    }
}

/// The frame on its way into receive buffers.
struct Delivery {
    /// Where the backend's frames are read to.
    buffer: Vec<u8>,
    /// The length of the frame in `buffer` (its header made fit for the driver) that
    /// no receive buffer has taken yet, whole; 0 when there is none.
    len: usize,
    /// With mergeable buffers: bytes of it put into the chains taken this turn, how
    /// many chains, and the first one's buffers (where `num_buffers` goes).
    at: usize,
    chains: u16,
    first: Vec<Buffer>,
}

impl Delivery {
    fn new() -> Self {
        Delivery {
            buffer: vec![0; MAX_PACKET],
            len: 0,
            at: 0,
            chains: 0,
            first: Vec::new(),
        }
    }

    /// The frame waiting for receive buffers.
    fn frame(&self) -> Option<&[u8]> {
        (self.len > 0).then(|| &self.buffer[..self.len])
    }

    /// Forgets the chains a frame was being put into (given back unused).
    fn start_over(&mut self) {
        self.at = 0;
        self.chains = 0;
        self.first.clear();
    }

    /// Drops the frame, with a chain that cannot take it.
    fn drop_frame(&mut self) -> Served {
        self.len = 0;
        self.start_over();
        Served::FAILED
    }
}

/// Puts the pending frame into a receive chain: whole, or with mergeable buffers as
/// much of it as the chain holds, the chain that completes it saying in the first
/// one's `num_buffers` how many it took. A chain the driver malformed takes the frame
/// down with it.
fn deliver(
    memory: &GuestMemory,
    chain: Result<&Chain, ChainError>,
    delivery: &mut Delivery,
    mergeable: bool,
) -> Served {
    if delivery.frame().is_none() {
        return Served::FAILED;
    }
    match put_frame(memory, chain, delivery, mergeable) {
        Some(served) => served,
        None => delivery.drop_frame(),
    }
}

/// [`deliver`]'s work: `None` when the chain cannot take the frame.
fn put_frame(
    memory: &GuestMemory,
    chain: Result<&Chain, ChainError>,
    delivery: &mut Delivery,
    mergeable: bool,
) -> Option<Served> {
    let chain = chain.ok().filter(|chain| chain.readable.is_empty())?;
    let Delivery {
        buffer,
        len,
        at,
        chains,
        first,
    } = delivery;
    let frame = &buffer[..*len];
    let room: u64 = chain.writable.iter().map(|b| u64::from(b.len)).sum();
    let opening = *at == 0;
    let whole = opening && room >= frame.len() as u64;
    if !whole && (!mergeable || (opening && room < NET_HEADER_LEN as u64)) {
        // A buffer too small for the frame (or, merging, for its header).
        return None;
    }
    let written = write_into(memory, &chain.writable, 0, &frame[*at..])
        .ok()
        .filter(|&written| written > 0)?;
    if opening {
        first.extend_from_slice(&chain.writable);
    }
    *at += written;
    *chains += 1;
    // A chain holds at most 2^32 - 1 bytes; the first one the whole header.
    let used = u32::try_from(written).unwrap_or(u32::MAX);
    let payload = (written - if opening { NET_HEADER_LEN } else { 0 }) as u64;
    if *at < frame.len() {
        return Some(Served::part(used, payload));
    }
    if *chains > 1 {
        write_into(memory, first, NUM_BUFFERS, &chains.to_le_bytes()).ok()?;
    }
    *len = 0;
    delivery.start_over();
    Some(Served::done(used, payload))
}
