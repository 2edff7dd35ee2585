// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Where a virtio-net device's frames go: the backend seam, and a datagram backend.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixDatagram;

/// Where a virtio-net device's frames go to and come from: a [`Tap`](crate::Tap), or
/// anything that moves whole frames (each with the 12-byte virtio-net header in front)
/// without blocking, such as a datagram socket to a user-space switch.
pub trait NetBackend: AsFd + Send + Sync {
    /// Sends one frame whole; `WouldBlock` when the backend is full.
    fn send(&self, frame: &[u8]) -> io::Result<usize>;
    /// Receives one frame into `buffer`; `WouldBlock` when none waits.
    fn receive(&self, buffer: &mut [u8]) -> io::Result<usize>;
    /// Whether the backend takes frames whose header asks for their checksum to be
    /// completed or for segmentation (a tap hands them to the host kernel, which does
    /// both), and hands over such frames as [`set_offloads`](Self::set_offloads)
    /// allows: what lets the device offer its driver checksum and TCP segmentation
    /// offload. A backend that says no (the default) sees and hands only whole,
    /// checksummed frames.
    fn offloads(&self) -> bool {
        false
    }
    /// Sets the offloads the backend may hand the guest (`TUN_F_*`); a backend that
    /// never offloads has nothing to set.
    fn set_offloads(&self, offloads: u32) -> io::Result<()> {
        let _ = offloads;
        Ok(())
    }
}

/// A backend of whole frames over a Unix datagram socket (non-blocking): each
/// datagram is one frame with its virtio-net header. For tests, fuzzing, and a VMM
/// that connects guests to a user-space switch.
#[derive(Debug)]
pub struct DatagramBackend {
    socket: UnixDatagram,
    offloads: bool,
}

impl DatagramBackend {
    /// The backend on `socket`, made non-blocking: whole, checksummed frames only.
    pub fn new(socket: UnixDatagram) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        Ok(DatagramBackend {
            socket,
            offloads: false,
        })
    }

    /// This backend for a peer that completes checksums and segments frames itself
    /// (as a tap's host kernel does), and may send the guest frames that need either,
    /// as far as the driver negotiated: see [`NetBackend::offloads`].
    pub fn with_offloads(mut self) -> Self {
        self.offloads = true;
        self
    }
}

impl AsFd for DatagramBackend {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl NetBackend for DatagramBackend {
    fn send(&self, frame: &[u8]) -> io::Result<usize> {
        self.socket.send(frame)
    }

    fn receive(&self, buffer: &mut [u8]) -> io::Result<usize> {
        self.socket.recv(buffer)
    }

    fn offloads(&self) -> bool {
        self.offloads
    }
}
