// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! virtio-net on a tap device.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};

use kvmkit_devices::Flow;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::VIRTIO_NET_F_MAC;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vm_memory::Bytes;

use crate::queue::{Chain, ChainError, QueueRunner, Served};
use crate::{
    read_config_from, ActivateError, Activation, DeviceLifecycle, GuestMemory, QueueCounters,
    VirtioDevice,
};

/// The virtio-net header with `VIRTIO_F_VERSION_1` (`virtio_net_hdr_v1`), which the
/// tap reads and writes in front of every frame too.
pub const NET_HEADER_LEN: usize = 12;
/// The largest frame with its header: a 64 KiB packet plus Ethernet and VLAN headers.
const MAX_PACKET: usize = NET_HEADER_LEN + 65535 + 18;
const QUEUE_SIZE: u16 = 256;
/// The most reads from the backend one turn of the receive queue makes: a backend
/// that keeps handing short or empty frames cannot keep the I/O thread.
const RECEIVE_BUDGET: usize = QUEUE_SIZE as usize;
const RECEIVE: u16 = 0;
/// `virtio_net_hdr.flags`: the checksum is to be completed (`NEEDS_CSUM`), or was
/// checked (`DATA_VALID`); `gso_type` 0 is `GSO_NONE`. This device negotiates no
/// checksum or segmentation offload, so a header in either direction carries neither.
const HDR_FLAGS: usize = 0;
const HDR_GSO_TYPE: usize = 1;
const HDR_F_NEEDS_CSUM: u8 = 1;
const TRANSMIT: u16 = 1;

/// What can go wrong while opening a tap.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TapError {
    /// `/dev/net/tun` cannot be opened.
    #[error("cannot open /dev/net/tun (is the tun module loaded, and are you root?)")]
    Open(#[source] io::Error),
    /// The name is too long for an interface.
    #[error("tap name {0:?} is longer than 15 bytes")]
    Name(String),
    /// An ioctl on the tap failed.
    #[error("{op} on tap {name} failed")]
    Ioctl {
        /// The ioctl.
        op: &'static str,
        /// The tap's name.
        name: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// A tap device opened for a virtio-net backend: frames with a 12-byte virtio-net
/// header in front (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`), non-blocking.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Opens (creating it if it does not exist) the tap `name`; a `%d` in it makes a
    /// new tap with the first free number there (see [`name`](Self::name)).
    pub fn open(name: &str) -> Result<Self, TapError> {
        if name.len() >= libc::IFNAMSIZ {
            return Err(TapError::Name(name.into()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::Open)?;
        // SAFETY: ifreq is plain data; all-zero is a valid value.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
            *slot = byte as libc::c_char;
        }
        // The flags are small constants (0x0002 | 0x1000 | 0x4000) that fit the short.
        #[allow(clippy::cast_possible_truncation)]
        let flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
        request.ifr_ifru.ifru_flags = flags;
        let mut tap = Tap {
            file,
            name: name.into(),
        };
        // SAFETY: TUNSETIFF reads and writes the ifreq it is given, which lives for
        // the call.
        tap.ioctl("TUNSETIFF", unsafe {
            libc::ioctl(tap.file.as_raw_fd(), libc::TUNSETIFF, &mut request)
        })?;
        // The kernel's name for it: `name` with its `%d` filled in.
        tap.name = interface_name(&request);
        let header_len: libc::c_int = 12;
        const _: () = assert!(NET_HEADER_LEN == 12);
        // SAFETY: TUNSETVNETHDRSZ reads one int.
        tap.ioctl("TUNSETVNETHDRSZ", unsafe {
            libc::ioctl(tap.file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &header_len)
        })?;
        Ok(tap)
    }

    fn ioctl(&self, op: &'static str, ret: libc::c_int) -> Result<(), TapError> {
        if ret < 0 {
            return Err(TapError::Ioctl {
                op,
                name: self.name.clone(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Sets the offloads the tap may hand the guest (`TUN_F_*`): what the negotiated
    /// features allow, none when the guest takes no offload.
    pub fn set_offloads(&self, offloads: u32) -> Result<(), TapError> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        self.ioctl("TUNSETOFFLOAD", unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(offloads),
            )
        })
    }

    /// A new tap, named `vmtapN` by the kernel, as Cloud Hypervisor makes one for an
    /// empty `tap=`. It lives as long as this `Tap`.
    pub fn create() -> Result<Self, TapError> {
        Self::open("vmtap%d")
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Gives the host's side of the tap the IPv4 address `addr` with netmask `mask`,
    /// and brings it up (what Cloud Hypervisor's `ip=` and `mask=` do): the guest
    /// then reaches the host at `addr`. Needs `CAP_NET_ADMIN`.
    pub fn configure_host(&self, addr: Ipv4Addr, mask: Ipv4Addr) -> Result<(), TapError> {
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(self.failed("socket(AF_INET)"));
        }
        // SAFETY: `fd` was just returned by socket(2) and is owned by nothing else.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        let request = |op: &'static str, code: libc::Ioctl, request: &mut libc::ifreq| {
            // SAFETY: each of these ioctls reads (and SIOCGIFFLAGS writes) the ifreq
            // it is given, which lives for the call.
            self.ioctl(op, unsafe {
                libc::ioctl(socket.as_raw_fd(), code, request)
            })
        };
        let mut ifreq = self.ifreq();
        ifreq.ifr_ifru.ifru_addr = sockaddr(addr);
        request("SIOCSIFADDR", libc::SIOCSIFADDR, &mut ifreq)?;
        let mut ifreq = self.ifreq();
        ifreq.ifr_ifru.ifru_netmask = sockaddr(mask);
        request("SIOCSIFNETMASK", libc::SIOCSIFNETMASK, &mut ifreq)?;
        let mut ifreq = self.ifreq();
        request("SIOCGIFFLAGS", libc::SIOCGIFFLAGS, &mut ifreq)?;
        // SAFETY: SIOCGIFFLAGS filled in the flags member of the union.
        let flags = unsafe { ifreq.ifr_ifru.ifru_flags };
        // IFF_UP and IFF_RUNNING are 0x1 and 0x40: they fit the short.
        #[allow(clippy::cast_possible_truncation)]
        let up = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        ifreq.ifr_ifru.ifru_flags = flags | up;
        request("SIOCSIFFLAGS", libc::SIOCSIFFLAGS, &mut ifreq)
    }

    /// An ifreq naming this tap.
    fn ifreq(&self) -> libc::ifreq {
        // SAFETY: ifreq is plain data; all-zero is a valid value.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (slot, byte) in request.ifr_name.iter_mut().zip(self.name.bytes()) {
            *slot = byte as libc::c_char;
        }
        request
    }

    fn failed(&self, op: &'static str) -> TapError {
        TapError::Ioctl {
            op,
            name: self.name.clone(),
            source: io::Error::last_os_error(),
        }
    }
}

/// The interface name the kernel left in `request`.
fn interface_name(request: &libc::ifreq) -> String {
    let bytes: Vec<u8> = request
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `AF_INET` (2) as the family field's type.
// The constant is 2: it fits.
#[allow(clippy::cast_possible_truncation)]
const AF_INET: libc::sa_family_t = libc::AF_INET as libc::sa_family_t;

/// `addr` as the `sockaddr` an interface ioctl takes.
fn sockaddr(addr: Ipv4Addr) -> libc::sockaddr {
    let inet = libc::sockaddr_in {
        sin_family: AF_INET,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are both 16 bytes of plain data; the kernel
    // reads the former through the latter for AF_INET.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(inet) }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Where a virtio-net device's frames go to and come from: a [`Tap`], or anything that
/// moves whole frames (each with the 12-byte virtio-net header in front) without
/// blocking, such as a datagram socket to a user-space switch.
pub trait NetBackend: AsFd + Send + Sync {
    /// Sends one frame whole; `WouldBlock` when the backend is full.
    fn send(&self, frame: &[u8]) -> io::Result<usize>;
    /// Receives one frame into `buffer`; `WouldBlock` when none waits.
    fn receive(&self, buffer: &mut [u8]) -> io::Result<usize>;
    /// Sets the offloads the backend may hand the guest (`TUN_F_*`); a backend that
    /// never offloads has nothing to set.
    fn set_offloads(&self, offloads: u32) -> io::Result<()> {
        let _ = offloads;
        Ok(())
    }
}

impl NetBackend for Tap {
    fn send(&self, frame: &[u8]) -> io::Result<usize> {
        (&self.file).write(frame)
    }

    fn receive(&self, buffer: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buffer)
    }

    fn set_offloads(&self, offloads: u32) -> io::Result<()> {
        Tap::set_offloads(self, offloads).map_err(io::Error::other)
    }
}

/// A backend of whole frames over a Unix datagram socket (non-blocking): each
/// datagram is one frame with its virtio-net header. For tests, fuzzing, and a VMM
/// that connects guests to a user-space switch.
#[derive(Debug)]
pub struct DatagramBackend(UnixDatagram);

impl DatagramBackend {
    /// The backend on `socket`, made non-blocking.
    pub fn new(socket: UnixDatagram) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        Ok(DatagramBackend(socket))
    }
}

impl AsFd for DatagramBackend {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl NetBackend for DatagramBackend {
    fn send(&self, frame: &[u8]) -> io::Result<usize> {
        self.0.send(frame)
    }

    fn receive(&self, buffer: &mut [u8]) -> io::Result<usize> {
        self.0.recv(buffer)
    }
}

/// A virtio network device on a [`NetBackend`] (a [`Tap`], usually): receive (queue 0)
/// and transmit (queue 1),
/// both driven by the I/O thread, with the MAC address in the configuration space.
/// A frame that does not fit the tap's queue is dropped and counted; a frame from the
/// tap waits (and the tap is not read) until the driver offers a receive buffer.
pub struct Net {
    tap: Arc<dyn NetBackend>,
    mac: [u8; 6],
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
            lifecycle: DeviceLifecycle::new(2),
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX) | (1 << VIRTIO_NET_F_MAC)
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
        // No offload is offered, so the tap must hand over whole, checksummed frames.
        self.tap.set_offloads(0).map_err(ActivateError::Events)?;
        let tap = Arc::clone(&self.tap);
        let mut frame = vec![0u8; MAX_PACKET];
        self.lifecycle
            .serve_on_notify(&activation, transmit, move |memory, chain| {
                send(memory, chain, &*tap, &mut frame)
            })?;
        let receiver = Arc::new(Mutex::new(Receiver {
            runner: self
                .lifecycle
                .runner(&activation, receive.index, receive.queue),
            tap: Arc::clone(&self.tap),
            pending: RefCell::new(VecDeque::new()),
            frame: vec![0u8; MAX_PACKET],
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

/// Writes a transmit chain's frame (header included) to the tap.
fn send(
    memory: &GuestMemory,
    chain: Result<&Chain, ChainError>,
    tap: &dyn NetBackend,
    frame: &mut [u8],
) -> Served {
    let Ok(chain) = chain else {
        return Served::FAILED;
    };
    if !chain.writable.is_empty() {
        return Served::FAILED;
    }
    let mut len = 0usize;
    for buffer in &chain.readable {
        let take = buffer.len as usize;
        if len + take > frame.len()
            || memory
                .read_slice(&mut frame[len..len + take], buffer.addr)
                .is_err()
        {
            return Served::FAILED;
        }
        len += take;
    }
    if len <= NET_HEADER_LEN {
        return Served::FAILED;
    }
    // Offloads the driver never negotiated: the tap would hand the frame to the host
    // kernel to checksum or segment on the guest's behalf.
    if frame[HDR_FLAGS] != 0 || frame[HDR_GSO_TYPE] != 0 {
        return Served::FAILED;
    }
    // A tap takes a frame whole or not at all; a full tap queue drops it, as a
    // congested link would.
    match tap.send(&frame[..len]) {
        Ok(written) if written == len => Served::done(0, (len - NET_HEADER_LEN) as u64),
        Ok(_) | Err(_) => Served::FAILED,
    }
}

/// The receive side, on the I/O thread.
struct Receiver {
    runner: QueueRunner,
    tap: Arc<dyn NetBackend>,
    /// A frame read from the tap that no receive buffer has taken yet.
    pending: RefCell<VecDeque<Vec<u8>>>,
    frame: Vec<u8>,
}

impl Receiver {
    /// Moves frames from the tap into receive buffers until either runs out; pauses
    /// the tap while a frame waits for a buffer.
    fn receive(&mut self) -> Flow {
        let mut reads = 0;
        loop {
            if self.pending.get_mut().is_empty() {
                if reads == RECEIVE_BUDGET {
                    // The rest on the loop's next turn, after its other sources.
                    return Flow::Continue;
                }
                reads += 1;
                match self.tap.receive(&mut self.frame) {
                    Ok(len) if len > NET_HEADER_LEN => {
                        if let Some(frame) = for_the_driver(&mut self.frame[..len]) {
                            let frame = frame.to_vec();
                            self.pending.get_mut().push_back(frame);
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
                runner, pending, ..
            } = self;
            let flow = runner.run(
                || !pending.borrow().is_empty(),
                |memory, chain| deliver(memory, chain, &mut pending.borrow_mut()),
            );
            match flow {
                Flow::Remove => return Flow::Remove,
                // Out of receive buffers with a frame waiting: wait for the driver.
                _ if !self.pending.get_mut().is_empty() => return Flow::Pause,
                _ => {}
            }
        }
    }
}

/// A frame from the backend as a driver that negotiated no offload may see it: the
/// `DATA_VALID` hint cleared with the other checksum and segmentation fields, and
/// `None` for one that still needs its checksum or is a segmentation super-frame.
fn for_the_driver(frame: &mut [u8]) -> Option<&mut [u8]> {
    if frame[HDR_FLAGS] & HDR_F_NEEDS_CSUM != 0 || frame[HDR_GSO_TYPE] != 0 {
        return None;
    }
    // flags, gso_type, hdr_len, gso_size, csum_start, csum_offset: all zero.
    frame[..10].fill(0);
    Some(frame)
}

/// Puts the first pending frame into a receive chain, with `num_buffers` set to 1.
fn deliver(
    memory: &GuestMemory,
    chain: Result<&Chain, ChainError>,
    pending: &mut VecDeque<Vec<u8>>,
) -> Served {
    let Ok(chain) = chain else {
        return Served::FAILED;
    };
    let room: u64 = chain.writable.iter().map(|b| u64::from(b.len)).sum();
    let Some(frame) = pending.front_mut() else {
        return Served::FAILED;
    };
    if !chain.readable.is_empty() || room < frame.len() as u64 {
        // A buffer too small for the frame: the frame is dropped with it.
        pending.pop_front();
        return Served::FAILED;
    }
    frame[10..12].copy_from_slice(&1u16.to_le_bytes());
    let mut at = 0;
    for buffer in &chain.writable {
        let take = (buffer.len as usize).min(frame.len() - at);
        if take == 0 {
            break;
        }
        if memory
            .write_slice(&frame[at..at + take], buffer.addr)
            .is_err()
        {
            pending.pop_front();
            return Served::FAILED;
        }
        at += take;
    }
    let len = frame.len();
    pending.pop_front();
    // A frame is at most MAX_PACKET bytes.
    Served::done(
        u32::try_from(len).unwrap_or(u32::MAX),
        (len - NET_HEADER_LEN) as u64,
    )
}
