// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A tap device: the host kernel's end of a guest's network.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use super::backend::NetBackend;
use super::header::NET_HEADER_LEN;

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

impl NetBackend for Tap {
    fn send(&self, frame: &[u8]) -> io::Result<usize> {
        (&self.file).write(frame)
    }

    fn receive(&self, buffer: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buffer)
    }

    /// A tap takes frames that need checksums or segmentation (the host kernel
    /// completes them), and hands over what `TUNSETOFFLOAD` allows.
    fn offloads(&self) -> bool {
        true
    }

    fn set_offloads(&self, offloads: u32) -> io::Result<()> {
        Tap::set_offloads(self, offloads).map_err(io::Error::other)
    }
}
