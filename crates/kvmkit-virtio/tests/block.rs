// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! virtio-blk requests, well-formed and hostile, against an image file.

// Test code: the values cast are small constants and sizes this file chose (queue
// slots, sector numbers, test buffer lengths), which its own assertions would catch
// truncating.
#![allow(clippy::cast_possible_truncation)]

mod common;

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

use common::*;
use kvmkit_virtio::{Block, SECTOR_SIZE};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
    VIRTIO_BLK_T_WRITE_ZEROES,
};
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Bytes, GuestAddress};

const NEXT: u32 = VRING_DESC_F_NEXT;
const WRITE: u32 = VRING_DESC_F_WRITE;
const HEADER: u64 = 0x1_0000;
const DATA: u64 = 0x2_0000;
const STATUS_BYTE: u64 = 0x1_f000;
const SECTORS: u64 = 64;

/// A scratch image of SECTORS sectors, sector n filled with byte n.
fn image() -> (File, std::path::PathBuf) {
    let path = std::env::temp_dir().join(format!(
        "kvmkit-blk-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    for sector in 0..SECTORS {
        file.write_all(&[sector as u8; SECTOR_SIZE as usize])
            .unwrap();
    }
    (file, path)
}

struct Disk {
    rig: Rig,
    file: File,
    path: std::path::PathBuf,
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn disk(readonly: bool) -> Disk {
    let (file, path) = image();
    let block = Block::with_file(
        file.try_clone().unwrap(),
        SECTORS * SECTOR_SIZE,
        readonly,
        b"kvmkit-test-disk",
    );
    let rig = Rig::new(Box::new(block));
    Disk { rig, file, path }
}

impl Disk {
    fn header(&self, kind: u32, sector: u64) {
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&kind.to_le_bytes());
        bytes[8..].copy_from_slice(&sector.to_le_bytes());
        self.rig
            .memory
            .write_slice(&bytes, GuestAddress(HEADER))
            .unwrap();
    }

    /// Runs the chain `descs` (head 0) through the device; returns (used length,
    /// status byte).
    fn request(&self, descs: &[virtio_queue::desc::RawDescriptor]) -> (u32, u8) {
        let mock = self.rig.mock();
        for (index, descriptor) in descs.iter().enumerate() {
            mock.desc_table().store(index as u16, *descriptor).unwrap();
        }
        self.rig
            .memory
            .write_obj(0xeeu8, GuestAddress(STATUS_BYTE))
            .unwrap();
        self.rig.negotiate(version_1());
        self.rig.setup_queue(0, &mock, u32::from(MOCK_SIZE));
        self.rig.driver_ok();
        self.rig.offer(&mock, &[0]);
        self.rig.write(QUEUE_NOTIFY, 0);
        assert!(self.rig.wait_interrupt(), "no completion");
        let used = self.rig.used(&mock);
        assert_eq!(used.len(), 1);
        let status = self.rig.memory.read_obj(GuestAddress(STATUS_BYTE)).unwrap();
        (used[0].1, status)
    }

    fn sector_on_disk(&self, sector: u64) -> Vec<u8> {
        let mut data = vec![0u8; SECTOR_SIZE as usize];
        self.file
            .read_exact_at(&mut data, sector * SECTOR_SIZE)
            .unwrap();
        data
    }

    fn errors(&self) -> u64 {
        self.rig.transport.queue_counters()[0].errors()
    }
}

/// The last descriptor of every request: the status byte.
fn status_desc() -> virtio_queue::desc::RawDescriptor {
    desc(STATUS_BYTE, 1, WRITE, 0)
}

#[test]
fn a_multi_segment_read_returns_the_sectors_and_ok() {
    let disk = disk(false);
    disk.header(VIRTIO_BLK_T_IN, 3);

    let (used, status) = disk.request(&[
        desc(HEADER, 16, NEXT, 1),
        desc(DATA, 512, WRITE | NEXT, 2),
        desc(DATA + 0x1000, 1024, WRITE | NEXT, 3),
        status_desc(),
    ]);

    assert_eq!((used, status), (1536 + 1, VIRTIO_BLK_S_OK as u8));
    assert_eq!(disk.rig.read_bytes(DATA, 512), vec![3u8; 512]);
    assert_eq!(disk.rig.read_bytes(DATA + 0x1000, 512), vec![4u8; 512]);
    assert_eq!(disk.rig.read_bytes(DATA + 0x1200, 512), vec![5u8; 512]);
}

#[test]
fn a_write_then_flush_lands_in_the_file() {
    let disk = disk(false);
    disk.rig
        .memory
        .write_slice(&[0xabu8; 1024], GuestAddress(DATA))
        .unwrap();
    disk.header(VIRTIO_BLK_T_OUT, 10);

    let (_, status) = disk.request(&[
        desc(HEADER, 16, NEXT, 1),
        desc(DATA, 1024, NEXT, 2),
        status_desc(),
    ]);

    assert_eq!(status, VIRTIO_BLK_S_OK as u8);
    assert_eq!(disk.sector_on_disk(10), vec![0xab; 512]);
    assert_eq!(disk.sector_on_disk(11), vec![0xab; 512]);
    assert_eq!(disk.sector_on_disk(12), vec![12; 512]);
}

#[test]
fn flush_and_get_id_succeed() {
    let disk = disk(false);
    disk.header(VIRTIO_BLK_T_GET_ID, 0);

    let (used, status) = disk.request(&[
        desc(HEADER, 16, NEXT, 1),
        desc(DATA, 20, WRITE | NEXT, 2),
        status_desc(),
    ]);

    assert_eq!((used, status), (21, VIRTIO_BLK_S_OK as u8));
    assert_eq!(&disk.rig.read_bytes(DATA, 16), b"kvmkit-test-disk");
    let disk = self::disk(false);
    disk.header(VIRTIO_BLK_T_FLUSH, 0);
    assert_eq!(
        disk.request(&[desc(HEADER, 16, NEXT, 1), status_desc()]).1,
        VIRTIO_BLK_S_OK as u8
    );
}

#[test]
fn writes_to_a_read_only_disk_fail_with_ioerr_and_leave_the_file() {
    let disk = disk(true);
    disk.rig
        .memory
        .write_slice(&[0xcdu8; 512], GuestAddress(DATA))
        .unwrap();
    disk.header(VIRTIO_BLK_T_OUT, 1);

    let (_, status) = disk.request(&[
        desc(HEADER, 16, NEXT, 1),
        desc(DATA, 512, NEXT, 2),
        status_desc(),
    ]);

    assert_eq!(status, VIRTIO_BLK_S_IOERR as u8);
    assert_eq!(disk.sector_on_disk(1), vec![1; 512]);
    assert_eq!(disk.errors(), 1);
}

#[test]
fn sector_ranges_past_the_capacity_or_wrapping_fail_with_ioerr() {
    for sector in [SECTORS, SECTORS - 1, u64::MAX] {
        let disk = disk(false);
        disk.header(VIRTIO_BLK_T_IN, sector);

        let (used, status) = disk.request(&[
            desc(HEADER, 16, NEXT, 1),
            desc(DATA, 1024, WRITE | NEXT, 2),
            status_desc(),
        ]);

        assert_eq!(
            (used, status),
            (1, VIRTIO_BLK_S_IOERR as u8),
            "sector {sector}"
        );
    }
}

#[test]
fn a_read_of_a_partial_sector_fails_with_ioerr() {
    let disk = disk(false);
    disk.header(VIRTIO_BLK_T_IN, 0);

    let (_, status) = disk.request(&[
        desc(HEADER, 16, NEXT, 1),
        desc(DATA, 100, WRITE | NEXT, 2),
        status_desc(),
    ]);

    assert_eq!(status, VIRTIO_BLK_S_IOERR as u8);
}

#[test]
fn a_request_without_a_status_byte_is_dropped_and_counted() {
    let disk = disk(false);
    disk.header(VIRTIO_BLK_T_IN, 0);

    let (used, status) = disk.request(&[desc(HEADER, 16, 0, 0)]);

    assert_eq!((used, status), (0, 0xee), "nothing written, no status");
    assert_eq!(disk.errors(), 1);
}

#[test]
fn a_short_header_fails_with_ioerr() {
    let disk = disk(false);

    let (_, status) = disk.request(&[desc(HEADER, 8, NEXT, 1), status_desc()]);

    assert_eq!(status, VIRTIO_BLK_S_IOERR as u8);
}

#[test]
fn a_data_buffer_in_the_wrong_direction_is_refused() {
    let disk = disk(false);
    disk.header(VIRTIO_BLK_T_IN, 0);

    // A read whose data buffer is device-readable: nothing to read into.
    let (used, status) = disk.request(&[
        desc(HEADER, 16, NEXT, 1),
        desc(DATA, 512, NEXT, 2),
        status_desc(),
    ]);

    assert_eq!((used, status), (1, VIRTIO_BLK_S_IOERR as u8));
}

#[test]
fn an_unknown_request_type_gets_unsupp() {
    let disk = disk(false);
    disk.header(0x7777, 0);

    let (_, status) = disk.request(&[desc(HEADER, 16, NEXT, 1), status_desc()]);

    assert_eq!(status, VIRTIO_BLK_S_UNSUPP as u8);
}

fn range(sector: u64, sectors: u32, flags: u32) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&sector.to_le_bytes());
    bytes[8..12].copy_from_slice(&sectors.to_le_bytes());
    bytes[12..].copy_from_slice(&flags.to_le_bytes());
    bytes
}

#[test]
fn write_zeroes_and_discard_zero_the_ranges_and_nothing_else() {
    let disk = disk(false);
    disk.rig
        .memory
        .write_slice(&range(2, 2, 0), GuestAddress(DATA))
        .unwrap();
    disk.header(VIRTIO_BLK_T_WRITE_ZEROES, 0);

    let (_, zeroed) = disk.request(&[
        desc(HEADER, 16, NEXT, 1),
        desc(DATA, 16, NEXT, 2),
        status_desc(),
    ]);

    assert_eq!(zeroed, VIRTIO_BLK_S_OK as u8);
    assert_eq!(disk.sector_on_disk(1), vec![1; 512]);
    assert_eq!(disk.sector_on_disk(2), vec![0; 512]);
    assert_eq!(disk.sector_on_disk(3), vec![0; 512]);
    assert_eq!(disk.sector_on_disk(4), vec![4; 512]);
    let disk = self::disk(false);
    disk.rig
        .memory
        .write_slice(&range(8, 8, 0), GuestAddress(DATA))
        .unwrap();
    disk.header(VIRTIO_BLK_T_DISCARD, 0);
    let (_, discarded) = disk.request(&[
        desc(HEADER, 16, NEXT, 1),
        desc(DATA, 16, NEXT, 2),
        status_desc(),
    ]);
    assert_eq!(discarded, VIRTIO_BLK_S_OK as u8);
    assert_eq!(disk.sector_on_disk(8), vec![0; 512]);
    assert_eq!(disk.sector_on_disk(16), vec![16; 512]);
}

#[test]
fn a_discard_range_past_the_capacity_fails() {
    let disk = disk(false);
    disk.rig
        .memory
        .write_slice(&range(SECTORS - 1, 2, 0), GuestAddress(DATA))
        .unwrap();
    disk.header(VIRTIO_BLK_T_DISCARD, 0);

    let (_, status) = disk.request(&[
        desc(HEADER, 16, NEXT, 1),
        desc(DATA, 16, NEXT, 2),
        status_desc(),
    ]);

    assert_eq!(status, VIRTIO_BLK_S_IOERR as u8);
}

#[test]
fn the_config_space_gives_the_capacity_in_sectors() {
    let disk = disk(false);
    let mut capacity = [0u8; 8];

    kvmkit_devices::BusDevice::read(&*disk.rig.transport, 0x100, &mut capacity);

    assert_eq!(u64::from_le_bytes(capacity), SECTORS);
}

#[test]
fn a_second_writer_or_a_reader_beside_a_writer_is_refused_naming_the_image() {
    let (_file, path) = image();
    let writer = Block::open(&path, false).unwrap();

    let second_writer = Block::open(&path, false).unwrap_err();
    let reader = Block::open(&path, true).unwrap_err();
    drop(writer);
    let after = Block::open(&path, false);
    let _ = std::fs::remove_file(&path);

    for error in [&second_writer, &reader] {
        assert!(
            matches!(error, kvmkit_virtio::BlockError::Locked { .. }),
            "{error}"
        );
        let message = error.to_string();
        assert!(message.contains(&path.display().to_string()) && message.contains("in use"));
    }
    assert!(after.is_ok(), "the lock outlived the disk");
}

#[test]
fn readers_share_an_image() {
    let (_file, path) = image();

    let first = Block::open(&path, true);
    let second = Block::open(&path, true);
    let _ = std::fs::remove_file(&path);

    assert!(first.is_ok() && second.is_ok());
}

#[test]
fn discard_with_flags_and_write_zeroes_with_unknown_flags_are_unsupported_and_change_nothing() {
    let disk = disk(false);
    // A good range first, then one with the unmap flag that discard may not carry.
    let mut ranges = range(2, 1, 0).to_vec();
    ranges.extend_from_slice(&range(3, 1, 1));
    disk.rig
        .memory
        .write_slice(&ranges, GuestAddress(DATA))
        .unwrap();
    disk.header(VIRTIO_BLK_T_DISCARD, 0);

    let (_, discard) = disk.request(&[
        desc(HEADER, 16, NEXT, 1),
        desc(DATA, 32, NEXT, 2),
        status_desc(),
    ]);

    assert_eq!(discard, VIRTIO_BLK_S_UNSUPP as u8);
    assert_eq!(
        disk.sector_on_disk(2),
        vec![2; 512],
        "a refused request acted"
    );
    let disk = self::disk(false);
    disk.rig
        .memory
        .write_slice(&range(2, 1, 1 << 5), GuestAddress(DATA))
        .unwrap();
    disk.header(VIRTIO_BLK_T_WRITE_ZEROES, 0);
    let (_, zeroes) = disk.request(&[
        desc(HEADER, 16, NEXT, 1),
        desc(DATA, 16, NEXT, 2),
        status_desc(),
    ]);
    assert_eq!(zeroes, VIRTIO_BLK_S_UNSUPP as u8);
    assert_eq!(disk.sector_on_disk(2), vec![2; 512]);
}

#[test]
fn an_image_that_cannot_punch_holes_is_offered_neither_discard_nor_write_zeroes() {
    use kvmkit_virtio::VirtioDevice;
    use virtio_bindings::virtio_blk::{VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES};
    let trims = (1u64 << VIRTIO_BLK_F_DISCARD) | (1 << VIRTIO_BLK_F_WRITE_ZEROES);
    let (file, path) = image();
    let on_a_file = Block::with_file(file, SECTORS * SECTOR_SIZE, false, b"");
    let _ = std::fs::remove_file(&path);
    // A character device stands in for a backend without hole punching (NFSv3, some
    // FUSE file systems): fallocate fails on it as it does there.
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .unwrap();

    let on_null = Block::with_file(null, SECTORS * SECTOR_SIZE, false, b"");

    assert_eq!(on_a_file.features() & trims, trims);
    assert_eq!(on_null.features() & trims, 0);
}

#[test]
fn the_serial_is_empty_unless_given_and_never_the_host_path() {
    let (_file, path) = image();
    let opened = Block::open(&path, true).unwrap();
    let (file, _) = image();
    let named = Block::with_file(file, SECTORS * SECTOR_SIZE, true, b"").with_serial(b"disk-0");
    let _ = std::fs::remove_file(&path);

    let serials: Vec<Vec<u8>> = [opened, named]
        .into_iter()
        .map(|block| {
            let disk = Disk {
                rig: Rig::new(Box::new(block)),
                file: image().0,
                path: path.clone(),
            };
            disk.header(VIRTIO_BLK_T_GET_ID, 0);
            disk.request(&[
                desc(HEADER, 16, NEXT, 1),
                desc(DATA, 20, WRITE | NEXT, 2),
                status_desc(),
            ]);
            disk.rig.read_bytes(DATA, 20)
        })
        .collect();

    assert_eq!(serials[0], vec![0u8; 20]);
    assert_eq!(&serials[1][..7], b"disk-0\0");
}

#[test]
fn requests_past_the_advertised_seg_max_or_size_max_fail_with_ioerr() {
    // size_max: one data segment of 1 MiB + 512 bytes, in a guest with room for it.
    let large_disk = |size: u64| {
        let (file, path) = image();
        file.set_len(size).unwrap();
        let block = Block::with_file(file.try_clone().unwrap(), size, false, b"");
        Disk {
            rig: Rig::with_ram(Box::new(block), 4 << 20),
            file,
            path,
        }
    };
    let read_of = |disk: &Disk, len: u32| {
        disk.header(VIRTIO_BLK_T_IN, 0);
        disk.request(&[
            desc(HEADER, 16, NEXT, 1),
            desc(DATA, len, WRITE | NEXT, 2),
            status_desc(),
        ])
        .1
    };

    let at_the_limit = read_of(&large_disk(4 << 20), 1 << 20);
    let past_it = read_of(&large_disk(4 << 20), (1 << 20) + 512);

    assert_eq!(at_the_limit, VIRTIO_BLK_S_OK as u8);
    assert_eq!(past_it, VIRTIO_BLK_S_IOERR as u8);
    let disk = large_disk(4 << 20);
    // seg_max cannot be passed with the mock queue's 16 descriptors: what the config
    // space advertises, which the device enforces alike.
    let mut seg_max = [0u8; 4];
    kvmkit_devices::BusDevice::read(&*disk.rig.transport, 0x100 + 12, &mut seg_max);
    let mut size_max = [0u8; 4];
    kvmkit_devices::BusDevice::read(&*disk.rig.transport, 0x100 + 8, &mut size_max);
    assert_eq!(u32::from_le_bytes(seg_max), 254);
    assert_eq!(u32::from_le_bytes(size_max), 1 << 20);
}
