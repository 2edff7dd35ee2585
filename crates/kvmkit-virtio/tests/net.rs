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
const TAP: &str = "kvmkit-t0";
const RX_RINGS: u64 = 0x9000;
const RX_BUFFERS: u64 = 0x3_0000;
const FRAME: u64 = 0x2_0000;

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("ip(8) runs");
    assert!(status.success(), "ip {args:?} failed");
}

/// Moves this thread into a network namespace of its own, with the tap up at HOST_IP.
fn tap_in_own_namespace() -> Tap {
    // SAFETY: unshare changes only this thread's namespaces.
    let ret = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        ret,
        0,
        "unshare(CLONE_NEWNET) needs root: {}",
        std::io::Error::last_os_error()
    );
    let tap = Tap::open(TAP).unwrap();
    ip(&["addr", "add", "192.0.2.1/24", "dev", TAP]);
    ip(&["link", "set", TAP, "up"]);
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

#[test]
fn an_arp_request_sent_on_the_transmit_queue_gets_its_reply_on_the_receive_queue() {
    let tap = tap_in_own_namespace();
    let rig = Rig::new(Box::new(Net::new(tap, MAC)));
    let rx = rig.mock_at(RX_RINGS);
    let tx = rig.mock();
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

    rig.negotiate(version_1() | (1 << 5));
    rig.setup_queue(0, &rx, u32::from(MOCK_SIZE));
    rig.setup_queue(1, &tx, u32::from(MOCK_SIZE));
    rig.driver_ok();
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
    let rig = Rig::new(Box::new(Net::new(
        DatagramBackend::new(device_end).unwrap(),
        MAC,
    )));
    let rx = rig.mock_at(RX_RINGS);
    let tx = rig.mock();
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
    rig.negotiate(version_1() | (1 << 5));
    rig.setup_queue(0, &rx, u32::from(MOCK_SIZE));
    rig.setup_queue(1, &tx, u32::from(MOCK_SIZE));
    rig.driver_ok();

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
