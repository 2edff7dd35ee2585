// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! virtio-net against a real tap: the test makes its own network namespace (for this
//! test's thread), a tap there with a TEST-NET-1 address, sends an ARP request through
//! the transmit queue and finds the kernel's reply on the receive queue.

// Test code: the values cast are small constants and sizes this file chose (queue
// slots, sector numbers, test buffer lengths), which its own assertions would catch
// truncating.
#![allow(clippy::cast_possible_truncation)]

mod common;

use std::process::Command;
use std::time::Instant;

use common::*;
use kvmkit_virtio::{Net, Tap, NET_HEADER_LEN};
use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
use vm_memory::{Bytes, GuestAddress};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const HOST_IP: [u8; 4] = [192, 0, 2, 1];
const GUEST_IP: [u8; 4] = [192, 0, 2, 2];
const RX_RINGS: u64 = 0x9000;
const RX_BUFFERS: u64 = 0x3_0000;
const FRAME: u64 = 0x2_0000;

/// Moves this thread into a network namespace of its own, with a new tap that the
/// device's own `configure_host` put up at HOST_IP (so every exchange below shows it
/// worked: the host answers the guest only at that address, on a tap that is up).
fn tap_in_own_namespace() -> Tap {
    // SAFETY: unshare changes only this thread's namespaces.
    let ret = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        ret,
        0,
        "unshare(CLONE_NEWNET) needs root: {}",
        std::io::Error::last_os_error()
    );
    let tap = Tap::create().unwrap();
    tap.configure_host(HOST_IP.into(), [255, 255, 255, 0].into())
        .unwrap();
    let shown = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", tap.name()])
        .output()
        .expect("ip(8) runs");
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(tap.name().starts_with("vmtap"), "{}", tap.name());
    assert!(shown.contains("192.0.2.1/24"), "{shown}");
    tap
}

/// An ARP request from the guest: who has HOST_IP? Tell GUEST_IP.
fn arp_request() -> Vec<u8> {
    let mut frame = vec![0u8; NET_HEADER_LEN];
    frame.extend([0xff; 6]);
    frame.extend(MAC);
    frame.extend([0x08, 0x06]);
    frame.extend([0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]);
    frame.extend(MAC);
    frame.extend(GUEST_IP);
    frame.extend([0; 6]);
    frame.extend(HOST_IP);
    frame
}

/// Whether `frame` (after its virtio-net header) is the ARP reply to the guest.
fn is_arp_reply(frame: &[u8]) -> bool {
    let ethernet = &frame[NET_HEADER_LEN..];
    ethernet.len() >= 42
        && ethernet[..6] == MAC
        && ethernet[12..14] == [0x08, 0x06]
        && ethernet[20..22] == [0x00, 0x02]
        && ethernet[28..32] == HOST_IP
        && ethernet[32..38] == MAC
}

/// A device with address MAC on `backend`, started with both queues set up:
/// (rig, rx rings, tx rings).
fn started(backend: impl kvmkit_virtio::NetBackend + 'static) -> (Rig, Rings, Rings) {
    started_with(backend, version_1() | (1 << 5))
}

/// As [`started`], the driver accepting `features`.
fn started_with(
    backend: impl kvmkit_virtio::NetBackend + 'static,
    features: u64,
) -> (Rig, Rings, Rings) {
    let rig = Rig::new(Box::new(Net::new(backend, MAC)));
    let rx = rig.mock_at(RX_RINGS);
    let tx = rig.mock();
    rig.negotiate(features);
    rig.setup_queue(0, &rx, u32::from(MOCK_SIZE));
    rig.setup_queue(1, &tx, u32::from(MOCK_SIZE));
    rig.driver_ok();
    (rig, rx, tx)
}

#[test]
fn an_arp_request_sent_on_the_transmit_queue_gets_its_reply_on_the_receive_queue() {
    let tap = tap_in_own_namespace();
    let (rig, rx, tx) = started(tap);
    for n in 0..8u16 {
        let buffer = desc(
            RX_BUFFERS + u64::from(n) * 0x800,
            0x800,
            VRING_DESC_F_WRITE,
            0,
        );
        rx.desc_table().store(n, buffer).unwrap();
    }
    let request = arp_request();
    rig.memory
        .write_slice(&request, GuestAddress(FRAME))
        .unwrap();
    tx.desc_table()
        .store(0, desc(FRAME, request.len() as u32, 0, 0))
        .unwrap();
    let mut mac = [0u8; 6];
    kvmkit_devices::BusDevice::read(&*rig.transport, 0x100, &mut mac);

    rig.offer(&rx, &[0, 1, 2, 3, 4, 5, 6, 7]);
    rig.write(QUEUE_NOTIFY, 0);
    rig.offer(&tx, &[0]);
    rig.write(QUEUE_NOTIFY, 1);

    let deadline = Instant::now() + PATIENCE;
    let reply = loop {
        let found = rig.used(&rx).into_iter().find_map(|(head, len)| {
            let frame = rig.read_bytes(RX_BUFFERS + u64::from(head) * 0x800, len as usize);
            is_arp_reply(&frame).then_some(frame)
        });
        if let Some(frame) = found {
            break frame;
        }
        assert!(
            Instant::now() < deadline,
            "no ARP reply in {:?}",
            rig.used(&rx)
        );
        rig.wait_interrupt();
    };

    assert_eq!(mac, MAC, "the MAC address in the config space");
    assert_eq!(rig.used(&tx), vec![(0, 0)]);
    assert_eq!(u16::from_le_bytes([reply[10], reply[11]]), 1, "num_buffers");
    let counters = rig.transport.queue_counters();
    assert!(counters[0].requests() >= 1 && counters[1].requests() == 1);
}

#[test]
fn frames_flow_both_ways_over_a_datagram_backend_and_wait_for_receive_buffers() {
    use kvmkit_virtio::DatagramBackend;
    use std::os::unix::net::UnixDatagram;
    let (device_end, peer) = UnixDatagram::pair().unwrap();
    let (rig, rx, tx) = started(DatagramBackend::new(device_end).unwrap());
    let outgoing = arp_request();
    rig.memory
        .write_slice(&outgoing, GuestAddress(FRAME))
        .unwrap();
    tx.desc_table()
        .store(0, desc(FRAME, outgoing.len() as u32, 0, 0))
        .unwrap();
    rx.desc_table()
        .store(0, desc(RX_BUFFERS, 0x800, VRING_DESC_F_WRITE, 0))
        .unwrap();

    rig.offer(&tx, &[0]);
    rig.write(QUEUE_NOTIFY, 1);
    let mut sent = vec![0u8; 2048];
    peer.set_read_timeout(Some(PATIENCE)).unwrap();
    let sent_len = peer.recv(&mut sent).unwrap();
    // A frame arrives before the driver offers a buffer: it waits, unread.
    let incoming = arp_request();
    peer.send(&incoming).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let before_buffers = rig.used(&rx);
    rig.offer(&rx, &[0]);
    rig.write(QUEUE_NOTIFY, 0);
    let deadline = Instant::now() + PATIENCE;
    while rig.used(&rx).is_empty() && Instant::now() < deadline {
        rig.wait_interrupt();
    }

    assert_eq!(&sent[..sent_len], &outgoing[..]);
    assert!(before_buffers.is_empty());
    assert_eq!(rig.used(&rx), vec![(0, incoming.len() as u32)]);
    let received = rig.read_bytes(RX_BUFFERS, incoming.len());
    assert_eq!(received[NET_HEADER_LEN..], incoming[NET_HEADER_LEN..]);
    assert_eq!(u16::from_le_bytes([received[10], received[11]]), 1);
}

/// A device on a datagram backend, queues set up: (rig, rx rings, tx rings, peer).
fn datagram_rig() -> (Rig, Rings, Rings, std::os::unix::net::UnixDatagram) {
    use kvmkit_virtio::DatagramBackend;
    use std::os::unix::net::UnixDatagram;
    let (device_end, peer) = UnixDatagram::pair().unwrap();
    peer.set_nonblocking(true).unwrap();
    let (rig, rx, tx) = started(DatagramBackend::new(device_end).unwrap());
    (rig, rx, tx, peer)
}

/// A device on a datagram backend whose peer takes offloads, the driver accepting
/// every offload the device offers: (rig, rx rings, tx rings, peer).
fn offloading_datagram_rig() -> (Rig, Rings, Rings, std::os::unix::net::UnixDatagram) {
    use kvmkit_virtio::{DatagramBackend, Offloads};
    use std::os::unix::net::UnixDatagram;
    let (device_end, peer) = UnixDatagram::pair().unwrap();
    peer.set_nonblocking(true).unwrap();
    let backend = DatagramBackend::new(device_end).unwrap().with_offloads();
    let (rig, rx, tx) = started_with(backend, version_1() | (1 << 5) | Offloads::FEATURES);
    (rig, rx, tx, peer)
}

/// A TCP super-frame of `len` bytes after its header, as a driver with segmentation
/// offload sends it: NEEDS_CSUM, GSO_TCPV4, segments of 1448 bytes.
fn super_frame(len: usize) -> Vec<u8> {
    let mut frame = vec![0u8; NET_HEADER_LEN];
    frame[0] = 1; // VIRTIO_NET_HDR_F_NEEDS_CSUM
    frame[1] = 1; // VIRTIO_NET_HDR_GSO_TCPV4
    frame[2..4].copy_from_slice(&54u16.to_le_bytes()); // hdr_len
    frame[4..6].copy_from_slice(&1448u16.to_le_bytes()); // gso_size
    frame[6..8].copy_from_slice(&34u16.to_le_bytes()); // csum_start
    frame[8..10].copy_from_slice(&16u16.to_le_bytes()); // csum_offset
    frame.extend((0..len).map(|i| (i % 251) as u8));
    frame
}

/// Sends `frame` through transmit descriptor `index`; returns what `peer` got.
fn transmit(
    rig: &Rig,
    tx: &Rings,
    peer: &std::os::unix::net::UnixDatagram,
    index: u16,
    frame: &[u8],
) -> Option<Vec<u8>> {
    let at = FRAME + 0x1000 * u64::from(index);
    rig.memory.write_slice(frame, GuestAddress(at)).unwrap();
    tx.desc_table()
        .store(index, desc(at, frame.len() as u32, 0, 0))
        .unwrap();
    rig.offer(tx, &[index]);
    rig.write(QUEUE_NOTIFY, 1);
    let deadline = Instant::now() + PATIENCE;
    while rig.used(tx).len() <= usize::from(index) && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let mut got = vec![0u8; 2048];
    std::thread::sleep(std::time::Duration::from_millis(10));
    let len = peer.recv(&mut got).ok()?;
    got.truncate(len);
    Some(got)
}

#[test]
fn transmitted_frames_asking_for_offloads_never_negotiated_are_dropped() {
    let (rig, _rx, tx, peer) = datagram_rig();
    let clean = arp_request();
    let mut needs_csum = arp_request();
    needs_csum[0] = 1; // VIRTIO_NET_HDR_F_NEEDS_CSUM
    let mut gso = arp_request();
    gso[1] = 1; // VIRTIO_NET_HDR_GSO_TCPV4

    let sent_needs_csum = transmit(&rig, &tx, &peer, 0, &needs_csum);
    let sent_gso = transmit(&rig, &tx, &peer, 1, &gso);
    let sent_clean = transmit(&rig, &tx, &peer, 2, &clean);

    assert_eq!(
        sent_needs_csum, None,
        "a checksum offload reached the backend"
    );
    assert_eq!(sent_gso, None, "a segmentation offload reached the backend");
    assert_eq!(sent_clean.as_deref(), Some(&clean[..]));
    assert_eq!(rig.transport.queue_counters()[1].errors(), 2);
}

#[test]
fn received_frames_carry_no_flag_the_driver_did_not_negotiate() {
    let (rig, rx, _tx, peer) = datagram_rig();
    for slot in 0..2u16 {
        rx.desc_table()
            .store(
                slot,
                desc(
                    RX_BUFFERS + 0x1000 * u64::from(slot),
                    0x800,
                    VRING_DESC_F_WRITE,
                    0,
                ),
            )
            .unwrap();
    }
    let mut gso = arp_request();
    gso[1] = 1;
    let mut data_valid = arp_request();
    data_valid[0] = 2; // VIRTIO_NET_HDR_F_DATA_VALID
    data_valid[4] = 0x40; // gso_size, meaningless without GSO

    peer.send(&gso).unwrap();
    peer.send(&data_valid).unwrap();
    rig.offer(&rx, &[0, 1]);
    rig.write(QUEUE_NOTIFY, 0);
    let deadline = Instant::now() + PATIENCE;
    while rig.used(&rx).is_empty() && Instant::now() < deadline {
        rig.wait_interrupt();
    }
    std::thread::sleep(std::time::Duration::from_millis(20));

    // The super-frame was dropped; the other arrived with its header cleared.
    assert_eq!(rig.used(&rx), vec![(0, data_valid.len() as u32)]);
    let received = rig.read_bytes(RX_BUFFERS, data_valid.len());
    assert_eq!(received[..10], [0u8; 10]);
    assert_eq!(received[NET_HEADER_LEN..], data_valid[NET_HEADER_LEN..]);
}

/// A backend that is always readable and never has a whole frame.
struct Stuttering {
    ready: vmm_sys_util::eventfd::EventFd,
    reads: std::sync::atomic::AtomicU64,
    sent: std::sync::atomic::AtomicU64,
}

impl std::os::fd::AsFd for Stuttering {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        kvmkit_devices::event_fd(&self.ready)
    }
}

/// The device's handle on the backend the test watches.
struct Shared(std::sync::Arc<Stuttering>);

impl kvmkit_virtio::NetBackend for Shared {
    fn send(&self, frame: &[u8]) -> std::io::Result<usize> {
        self.0
            .sent
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(frame.len())
    }

    fn receive(&self, _buffer: &mut [u8]) -> std::io::Result<usize> {
        self.0
            .reads
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(0)
    }
}

impl std::os::fd::AsFd for Shared {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[test]
fn a_backend_that_keeps_returning_empty_reads_does_not_keep_the_io_thread() {
    use std::sync::atomic::Ordering;
    let backend = std::sync::Arc::new(Stuttering {
        ready: vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        reads: Default::default(),
        sent: Default::default(),
    });
    backend.ready.write(1).unwrap();
    let (rig, _rx, tx) = started(Shared(std::sync::Arc::clone(&backend)));
    let frame = arp_request();
    rig.memory.write_slice(&frame, GuestAddress(FRAME)).unwrap();
    tx.desc_table()
        .store(0, desc(FRAME, frame.len() as u32, 0, 0))
        .unwrap();

    // The receive side spins on the backend; the transmit queue must still be served.
    std::thread::sleep(std::time::Duration::from_millis(20));
    rig.offer(&tx, &[0]);
    rig.write(QUEUE_NOTIFY, 1);
    let deadline = Instant::now() + PATIENCE;
    while backend.sent.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }

    assert_eq!(backend.sent.load(Ordering::SeqCst), 1);
    assert!(backend.reads.load(Ordering::SeqCst) > 0);
    rig.write(STATUS, 0);
}

#[test]
fn with_offloads_negotiated_a_super_frame_crosses_whole_both_ways() {
    let (rig, rx, tx, peer) = offloading_datagram_rig();
    // 60 KiB after the header, in 15 descriptors of 4 KiB as a driver's pages are.
    let outgoing = super_frame(60 << 10);
    rig.memory
        .write_slice(&outgoing, GuestAddress(FRAME))
        .unwrap();
    let pieces = outgoing.len().div_ceil(0x1000) as u16;
    for piece in 0..pieces {
        let at = 0x1000 * u64::from(piece);
        let len = (outgoing.len() as u64 - at).min(0x1000) as u32;
        let next = if piece + 1 < pieces { 1 } else { 0 }; // VRING_DESC_F_NEXT
        tx.desc_table()
            .store(piece, desc(FRAME + at, len, next, piece + 1))
            .unwrap();
    }
    // One receive chain big enough for a super-frame: 64 KiB and a header.
    rx.desc_table()
        .store(0, desc(RX_BUFFERS, 0x1_1000, VRING_DESC_F_WRITE, 0))
        .unwrap();
    let incoming = super_frame(50 << 10);

    rig.offer(&tx, &[0]);
    rig.write(QUEUE_NOTIFY, 1);
    let mut sent = vec![0u8; 1 << 17];
    peer.set_nonblocking(false).unwrap();
    peer.set_read_timeout(Some(PATIENCE)).unwrap();
    let sent_len = peer.recv(&mut sent).unwrap();
    peer.send(&incoming).unwrap();
    rig.offer(&rx, &[0]);
    rig.write(QUEUE_NOTIFY, 0);
    let deadline = Instant::now() + PATIENCE;
    while rig.used(&rx).is_empty() && Instant::now() < deadline {
        rig.wait_interrupt();
    }

    assert_eq!(sent_len, outgoing.len(), "the super-frame went out whole");
    assert_eq!(&sent[..sent_len], &outgoing[..]);
    assert_eq!(rig.used(&rx), vec![(0, incoming.len() as u32)]);
    let received = rig.read_bytes(RX_BUFFERS, incoming.len());
    assert_eq!(received[..10], incoming[..10], "its offload fields kept");
    assert_eq!(u16::from_le_bytes([received[10], received[11]]), 1);
    assert_eq!(received[NET_HEADER_LEN..], incoming[NET_HEADER_LEN..]);
}

#[test]
fn a_backend_without_offloads_is_offered_none_and_its_driver_cannot_take_them() {
    let (device_end, _peer) = std::os::unix::net::UnixDatagram::pair().unwrap();
    let rig = Rig::new(Box::new(Net::new(
        kvmkit_virtio::DatagramBackend::new(device_end).unwrap(),
        MAC,
    )));

    let status = rig.negotiate(version_1() | (1 << 5) | kvmkit_virtio::Offloads::FEATURES);

    assert!(
        !is_set(status, 8),
        "FEATURES_OK with offloads the device never offered: {status:#x}"
    );
}

/// Whether the interface `name` has TCP segmentation offload on (`ETHTOOL_GTSO`).
fn tso_enabled(name: &str) -> bool {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    const SIOCETHTOOL: libc::Ioctl = 0x8946;
    const ETHTOOL_GTSO: u32 = 0x1e;
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0);
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let socket = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut value = EthtoolValue {
        cmd: ETHTOOL_GTSO,
        data: 0,
    };
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    request.ifr_ifru.ifru_data = (&raw mut value).cast();
    // SAFETY: SIOCETHTOOL reads the ifreq and writes the ethtool_value it points to,
    // both of which live for the call.
    let ret = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            SIOCETHTOOL,
            &mut request,
        )
    };
    assert_eq!(ret, 0, "ETHTOOL_GTSO: {}", std::io::Error::last_os_error());
    value.data != 0
}

#[test]
fn the_tap_hands_over_super_frames_only_once_the_driver_negotiated_them() {
    let tap = tap_in_own_namespace();
    let name = tap.name().to_owned();
    let before = tso_enabled(&name);
    let (rig, _rx, _tx) = started_with(
        tap,
        version_1() | (1 << 5) | kvmkit_virtio::Offloads::FEATURES,
    );
    let negotiated = tso_enabled(&name);
    rig.write(STATUS, 0);

    assert!(!before, "the tap offloaded before any driver asked");
    assert!(negotiated, "the tap does not hand over TCP super-frames");
}

/// Offers receive chains `heads` of 2 KiB each at RX_BUFFERS + 0x1000 * head.
fn offer_small_receive_buffers(rig: &Rig, rx: &Rings, heads: &[u16]) {
    for &head in heads {
        let buffer = desc(
            RX_BUFFERS + 0x1000 * u64::from(head),
            0x800,
            VRING_DESC_F_WRITE,
            0,
        );
        rx.desc_table().store(head, buffer).unwrap();
    }
    rig.offer(rx, heads);
    rig.write(QUEUE_NOTIFY, 0);
}

#[test]
fn with_mergeable_buffers_a_frame_spreads_over_chains_published_only_once_complete() {
    use kvmkit_virtio::DatagramBackend;
    use std::os::unix::net::UnixDatagram;
    let (device_end, peer) = UnixDatagram::pair().unwrap();
    let mrg_rxbuf = 1 << 15;
    let (rig, rx, _tx) = started_with(
        DatagramBackend::new(device_end).unwrap(),
        version_1() | (1 << 5) | mrg_rxbuf,
    );
    // 5000 bytes with the header: three chains of 2 KiB.
    let mut incoming = arp_request();
    incoming.resize(5000, 0xa5);
    incoming[4000] = 0x5a;

    peer.send(&incoming).unwrap();
    offer_small_receive_buffers(&rig, &rx, &[0, 1]);
    std::thread::sleep(std::time::Duration::from_millis(50));
    let with_two_chains = rig.used(&rx);
    offer_small_receive_buffers(&rig, &rx, &[2]);
    let deadline = Instant::now() + PATIENCE;
    while rig.used(&rx).is_empty() && Instant::now() < deadline {
        rig.wait_interrupt();
    }

    assert!(
        with_two_chains.is_empty(),
        "part of a frame was published: {with_two_chains:?}"
    );
    assert_eq!(
        rig.used(&rx),
        vec![(0, 0x800), (1, 0x800), (2, 5000 - 0x1000)]
    );
    let mut received = Vec::new();
    for (head, len) in rig.used(&rx) {
        received.extend(rig.read_bytes(RX_BUFFERS + 0x1000 * u64::from(head), len as usize));
    }
    assert_eq!(
        u16::from_le_bytes([received[10], received[11]]),
        3,
        "num_buffers"
    );
    assert_eq!(received[..10], [0u8; 10]);
    assert_eq!(received[NET_HEADER_LEN..], incoming[NET_HEADER_LEN..]);
}

#[test]
fn a_frame_waiting_for_more_mergeable_buffers_asks_to_be_told_of_the_next_one() {
    use kvmkit_virtio::DatagramBackend;
    use std::os::unix::net::UnixDatagram;
    let (device_end, peer) = UnixDatagram::pair().unwrap();
    let (mrg_rxbuf, event_idx) = (1 << 15, 1 << 29);
    let (rig, rx, _tx) = started_with(
        DatagramBackend::new(device_end).unwrap(),
        version_1() | (1 << 5) | mrg_rxbuf | event_idx,
    );
    let mut incoming = arp_request();
    incoming.resize(5000, 0xa5);
    let avail_event = GuestAddress(rx.used_addr().0 + 4 + 8 * u64::from(MOCK_SIZE));

    peer.send(&incoming).unwrap();
    offer_small_receive_buffers(&rig, &rx, &[0, 1]);
    std::thread::sleep(std::time::Duration::from_millis(50));
    let asked_at: u16 = rig.memory.read_obj(avail_event).unwrap();
    offer_small_receive_buffers(&rig, &rx, &[2]);
    let deadline = Instant::now() + PATIENCE;
    while rig.used(&rx).is_empty() && Instant::now() < deadline {
        rig.wait_interrupt();
    }

    // Behind 2, a driver that adds its third chain (index 2 -> 3) would not notify.
    assert_eq!(asked_at, 2, "avail_event behind the chains the device saw");
    assert_eq!(rig.used(&rx).len(), 3);
}

/// A backend whose `send` waits until the test opens its gate.
struct Gated {
    ready: vmm_sys_util::eventfd::EventFd,
    open: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
    sent: std::sync::atomic::AtomicU64,
}

impl Gated {
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

/// The device's handle on the gated backend the test holds.
struct GatedHandle(std::sync::Arc<Gated>);

impl std::os::fd::AsFd for GatedHandle {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        kvmkit_devices::event_fd(&self.0.ready)
    }
}

impl kvmkit_virtio::NetBackend for GatedHandle {
    fn send(&self, frame: &[u8]) -> std::io::Result<usize> {
        let open = self.0.open.lock().unwrap();
        let _open = self
            .0
            .opened
            .wait_timeout_while(open, PATIENCE, |open| !*open)
            .unwrap();
        self.0
            .sent
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(frame.len())
    }

    fn receive(&self, _buffer: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::WouldBlock.into())
    }
}

#[test]
fn a_transmitted_chain_is_handed_back_before_the_backend_takes_its_frame() {
    use std::sync::atomic::Ordering;
    let backend = std::sync::Arc::new(Gated {
        ready: vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        open: std::sync::Mutex::new(false),
        opened: std::sync::Condvar::new(),
        sent: Default::default(),
    });
    let (rig, _rx, tx) = started(GatedHandle(std::sync::Arc::clone(&backend)));
    let frame = arp_request();
    rig.memory.write_slice(&frame, GuestAddress(FRAME)).unwrap();
    tx.desc_table()
        .store(0, desc(FRAME, frame.len() as u32, 0, 0))
        .unwrap();

    rig.offer(&tx, &[0]);
    rig.write(QUEUE_NOTIFY, 1);
    let deadline = Instant::now() + std::time::Duration::from_secs(2);
    while rig.used(&tx).is_empty() && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let used_while_the_backend_waits = rig.used(&tx);
    let sent_by_then = backend.sent.load(Ordering::SeqCst);
    backend.open();
    let deadline = Instant::now() + PATIENCE;
    while backend.sent.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }

    assert_eq!(used_while_the_backend_waits, vec![(0, 0)]);
    assert_eq!(sent_by_then, 0);
    assert_eq!(backend.sent.load(Ordering::SeqCst), 1);
}
