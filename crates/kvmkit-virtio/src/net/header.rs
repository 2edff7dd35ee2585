// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The virtio-net header in front of every frame, and the checksum and segmentation
//! offloads a driver and device agree on, which say what a header may ask for in
//! each direction (virtio 1.2 §5.1.6).

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
    VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
};

/// The virtio-net header with `VIRTIO_F_VERSION_1` (`virtio_net_hdr_v1`), which the
/// tap reads and writes in front of every frame too.
pub const NET_HEADER_LEN: usize = 12;

/// `flags`, `gso_type`, then `hdr_len`, `gso_size`, `csum_start`, `csum_offset` (two
/// bytes each), then `num_buffers`.
const FLAGS: usize = 0;
const GSO_TYPE: usize = 1;
const GSO_SIZE: usize = 4;
/// The fields an offload fills in: all but `num_buffers`.
const OFFLOAD_FIELDS: usize = 10;
/// `num_buffers`: how many receive chains a frame spreads over.
pub(crate) const NUM_BUFFERS: usize = 10;

// The header's flag and type values are single bytes.
#[allow(clippy::cast_possible_truncation)]
const NEEDS_CSUM: u8 = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
#[allow(clippy::cast_possible_truncation)]
const DATA_VALID: u8 = VIRTIO_NET_HDR_F_DATA_VALID as u8;
#[allow(clippy::cast_possible_truncation)]
const GSO_ECN: u8 = VIRTIO_NET_HDR_GSO_ECN as u8;
#[allow(clippy::cast_possible_truncation)]
const GSO_NONE: u8 = VIRTIO_NET_HDR_GSO_NONE as u8;
#[allow(clippy::cast_possible_truncation)]
const GSO_TCPV4: u8 = VIRTIO_NET_HDR_GSO_TCPV4 as u8;
#[allow(clippy::cast_possible_truncation)]
const GSO_TCPV6: u8 = VIRTIO_NET_HDR_GSO_TCPV6 as u8;

/// The segmentation features of each direction: IPv4, IPv6, ECN. `HOST_*`: what the
/// driver may send; `GUEST_*`: what it may be handed.
const HOST_TSO: [u32; 3] = [
    VIRTIO_NET_F_HOST_TSO4,
    VIRTIO_NET_F_HOST_TSO6,
    VIRTIO_NET_F_HOST_ECN,
];
const GUEST_TSO: [u32; 3] = [
    VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_GUEST_ECN,
];

const fn bit(feature: u32) -> u64 {
    1 << feature
}

/// The checksum and TCP segmentation offloads of a virtio-net device, as negotiated:
/// what a transmitted header may ask of the backend, what a received one may hand the
/// driver, and what the tap is told it may hand over.
///
/// ```
/// use kvmkit_virtio::Offloads;
///
/// let none = Offloads::negotiated(0);
/// let all = Offloads::negotiated(Offloads::FEATURES);
/// assert_eq!(none.tun_flags(), 0);
/// assert_eq!(all.tun_flags(), 0x0f); // TUN_F_CSUM | TSO4 | TSO6 | TSO_ECN
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offloads {
    features: u64,
}

impl Offloads {
    /// Checksum offload both ways: the guest may leave its checksums to the host
    /// (`CSUM`), and take frames whose checksum the host left to it (`GUEST_CSUM`).
    pub const CHECKSUM: u64 = bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_GUEST_CSUM);
    /// TCP segmentation offload (IPv4, IPv6, with ECN) both ways, which needs
    /// [`CHECKSUM`](Self::CHECKSUM).
    pub const TSO: u64 = bit(VIRTIO_NET_F_GUEST_TSO4)
        | bit(VIRTIO_NET_F_GUEST_TSO6)
        | bit(VIRTIO_NET_F_GUEST_ECN)
        | bit(VIRTIO_NET_F_HOST_TSO4)
        | bit(VIRTIO_NET_F_HOST_TSO6)
        | bit(VIRTIO_NET_F_HOST_ECN);
    /// The offload features a device offers when its backend takes offloads:
    /// checksum and TCP segmentation offload both ways. UDP fragmentation offload
    /// (`*_UFO`), which Linux guests no longer use, is not.
    pub const FEATURES: u64 = Self::CHECKSUM | Self::TSO;

    /// The offloads in the driver's accepted `features`.
    pub fn negotiated(features: u64) -> Self {
        Offloads {
            features: features & Self::FEATURES,
        }
    }

    fn has(self, feature: u32) -> bool {
        self.features & bit(feature) != 0
    }

    /// Whether a header's `gso_type` asks for no segmentation, or for one that the
    /// direction's negotiated features (`[tcpv4, tcpv6, ecn]`: [`HOST_TSO`] or
    /// [`GUEST_TSO`]) allow, its ECN bit included.
    fn allows_gso(self, gso: u8, [tcpv4, tcpv6, ecn]: [u32; 3]) -> bool {
        let kind = match gso & !GSO_ECN {
            GSO_NONE => return gso == GSO_NONE,
            GSO_TCPV4 => tcpv4,
            GSO_TCPV6 => tcpv6,
            _ => return false,
        };
        self.has(kind) && (gso & GSO_ECN == 0 || self.has(ecn))
    }

    /// The `TUN_F_*` flags (`TUNSETOFFLOAD`) that let a tap hand the driver what it
    /// negotiated to receive: frames with their checksum left to complete, and TCP
    /// super-frames. A tap ignores segmentation without checksum offload, as the
    /// driver may not negotiate it without.
    pub fn tun_flags(self) -> u32 {
        let mut flags = 0;
        for (feature, flag) in [
            (VIRTIO_NET_F_GUEST_CSUM, libc::TUN_F_CSUM),
            (VIRTIO_NET_F_GUEST_TSO4, libc::TUN_F_TSO4),
            (VIRTIO_NET_F_GUEST_TSO6, libc::TUN_F_TSO6),
            (VIRTIO_NET_F_GUEST_ECN, libc::TUN_F_TSO_ECN),
        ] {
            if self.has(feature) {
                flags |= flag;
            }
        }
        flags
    }

    /// Whether the header of a frame the driver transmits asks only for what it
    /// negotiated: `NEEDS_CSUM` with `VIRTIO_NET_F_CSUM`; a TCP super-frame with
    /// `HOST_TSO4` or `HOST_TSO6` (and `HOST_ECN` for its ECN bit), whose checksum
    /// the backend completes and whose segment size is not zero; no other flag. A
    /// frame asking for more would have the host kernel do what was never agreed.
    pub fn allows_transmit(self, header: &[u8; NET_HEADER_LEN]) -> bool {
        let flags = header[FLAGS];
        let gso = header[GSO_TYPE];
        let needs_csum = flags & NEEDS_CSUM != 0;
        if flags & !NEEDS_CSUM != 0 || (needs_csum && !self.has(VIRTIO_NET_F_CSUM)) {
            return false;
        }
        if !self.allows_gso(gso, HOST_TSO) {
            return false;
        }
        let size = u16::from_le_bytes([header[GSO_SIZE], header[GSO_SIZE + 1]]);
        gso == GSO_NONE || (needs_csum && size != 0)
    }

    /// Makes the header of a frame from the backend fit for the driver, with
    /// `num_buffers` 1: a checksum left to complete only with `GUEST_CSUM`, a TCP
    /// super-frame only with `GUEST_TSO4`/`GUEST_TSO6` (and `GUEST_ECN` for its ECN
    /// bit); the `DATA_VALID` hint kept with `GUEST_CSUM` and cleared without, with
    /// every field an offload fills in. `false`: the frame needs what the driver did
    /// not negotiate, and is to be dropped.
    pub fn for_the_driver(self, header: &mut [u8; NET_HEADER_LEN]) -> bool {
        let flags = header[FLAGS];
        let gso = header[GSO_TYPE];
        let csum = self.has(VIRTIO_NET_F_GUEST_CSUM);
        if flags & NEEDS_CSUM != 0 && !csum {
            return false;
        }
        if !self.allows_gso(gso, GUEST_TSO) {
            return false;
        }
        if csum {
            header[FLAGS] = flags & (NEEDS_CSUM | DATA_VALID);
        } else {
            header[..OFFLOAD_FIELDS].fill(0);
        }
        header[NUM_BUFFERS..].copy_from_slice(&1u16.to_le_bytes());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(flags: u8, gso: u8, gso_size: u16) -> [u8; NET_HEADER_LEN] {
        let mut header = [0u8; NET_HEADER_LEN];
        header[FLAGS] = flags;
        header[GSO_TYPE] = gso;
        header[GSO_SIZE..GSO_SIZE + 2].copy_from_slice(&gso_size.to_le_bytes());
        header
    }

    #[test]
    fn without_offloads_a_transmitted_header_may_ask_for_nothing() {
        let none = Offloads::negotiated(0);

        assert!(none.allows_transmit(&header(0, GSO_NONE, 0)));
        assert!(!none.allows_transmit(&header(NEEDS_CSUM, GSO_NONE, 0)));
        assert!(!none.allows_transmit(&header(NEEDS_CSUM, GSO_TCPV4, 1448)));
        assert!(!none.allows_transmit(&header(DATA_VALID, GSO_NONE, 0)));
    }

    #[test]
    fn a_transmitted_super_frame_needs_its_feature_a_checksum_and_a_segment_size() {
        let tso4 = Offloads::negotiated(bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_HOST_TSO4));

        assert!(tso4.allows_transmit(&header(NEEDS_CSUM, GSO_NONE, 0)));
        assert!(tso4.allows_transmit(&header(NEEDS_CSUM, GSO_TCPV4, 1448)));
        assert!(!tso4.allows_transmit(&header(NEEDS_CSUM, GSO_TCPV6, 1428)));
        assert!(!tso4.allows_transmit(&header(NEEDS_CSUM, GSO_TCPV4 | GSO_ECN, 1448)));
        assert!(!tso4.allows_transmit(&header(0, GSO_TCPV4, 1448)));
        assert!(!tso4.allows_transmit(&header(NEEDS_CSUM, GSO_TCPV4, 0)));
        assert!(!tso4.allows_transmit(&header(NEEDS_CSUM, 3, 1448)), "UDP");
    }

    #[test]
    fn a_received_header_keeps_only_what_the_driver_negotiated() {
        let none = Offloads::negotiated(0);
        let all = Offloads::negotiated(Offloads::FEATURES);
        let mut hint = header(DATA_VALID, GSO_NONE, 0x40);
        let mut hint_kept = hint;
        let mut partial = header(NEEDS_CSUM, GSO_NONE, 0);
        let mut super_frame = header(NEEDS_CSUM, GSO_TCPV4, 1448);

        assert!(none.for_the_driver(&mut hint));
        assert!(all.for_the_driver(&mut hint_kept));
        assert!(!none.for_the_driver(&mut partial.clone()));
        assert!(all.for_the_driver(&mut partial));
        assert!(!none.for_the_driver(&mut super_frame.clone()));
        assert!(all.for_the_driver(&mut super_frame));

        let mut cleared = header(0, GSO_NONE, 0);
        cleared[NUM_BUFFERS] = 1;
        assert_eq!(hint, cleared);
        assert_eq!(hint_kept[FLAGS], DATA_VALID);
        assert_eq!(super_frame[GSO_TYPE], GSO_TCPV4);
        assert_eq!(super_frame[NUM_BUFFERS..], [1, 0]);
    }

    #[test]
    fn a_received_header_of_an_unknown_kind_is_dropped_whatever_was_negotiated() {
        let all = Offloads::negotiated(Offloads::FEATURES);

        assert!(!all.for_the_driver(&mut header(NEEDS_CSUM, 3, 1448)), "UDP");
        assert!(!all.for_the_driver(&mut header(0, 0x7f, 0)));
    }
}
