// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A write acknowledged after a completed flush survives `kill -9` of the VMM: this
//! binary runs itself as a child that serves a virtio-blk disk, has it write and flush,
//! and says so; the parent then kills it with SIGKILL and reads the image.

// Test code: the values cast are small constants and sizes this file chose (queue
// slots, sector numbers, test buffer lengths), which its own assertions would catch
// truncating.
#![allow(clippy::cast_possible_truncation)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;
use kvmkit_virtio::{Block, SECTOR_SIZE};
use virtio_bindings::virtio_blk::{VIRTIO_BLK_S_OK, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_OUT};
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Bytes, GuestAddress};

const CHILD: &str = "KVMKIT_DURABILITY_IMAGE";
const SECTOR: u64 = 5;
const PATTERN: u8 = 0x77;

fn main() {
    match std::env::var_os(CHILD) {
        Some(image) => serve_then_wait(std::path::Path::new(&image)),
        None => {
            kill_after_flush_keeps_the_write();
            println!("test kill_after_flush_keeps_the_write ... ok");
            println!("1 passed, 0 failed");
        }
    }
}

/// The child: write PATTERN to SECTOR, flush, report, then wait to be killed.
fn serve_then_wait(image: &std::path::Path) {
    let block = Block::open(image, false).expect("the image opens");
    let rig = Rig::new(Box::new(block));
    let mock = rig.mock();
    let header = |at: u64, kind: u32, sector: u64| {
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&kind.to_le_bytes());
        bytes[8..].copy_from_slice(&sector.to_le_bytes());
        rig.memory.write_slice(&bytes, GuestAddress(at)).unwrap();
    };
    header(0x1_0000, VIRTIO_BLK_T_OUT, SECTOR);
    header(0x1_0010, VIRTIO_BLK_T_FLUSH, 0);
    rig.memory
        .write_slice(&[PATTERN; SECTOR_SIZE as usize], GuestAddress(0x2_0000))
        .unwrap();
    let next = VRING_DESC_F_NEXT;
    let write = VRING_DESC_F_WRITE;
    for (index, descriptor) in [
        desc(0x1_0000, 16, next, 1),
        desc(0x2_0000, SECTOR_SIZE as u32, next, 2),
        desc(0x1_f000, 1, write, 0),
        desc(0x1_0010, 16, next, 4),
        desc(0x1_f001, 1, write, 0),
    ]
    .into_iter()
    .enumerate()
    {
        mock.desc_table().store(index as u16, descriptor).unwrap();
    }
    rig.negotiate(version_1());
    rig.setup_queue(0, &mock, u32::from(MOCK_SIZE));
    rig.driver_ok();
    rig.offer(&mock, &[0, 3]);
    rig.write(QUEUE_NOTIFY, 0);
    while rig.used(&mock).len() < 2 {
        assert!(rig.wait_interrupt(), "the disk did not complete");
    }
    let mut status = [0u8; 2];
    rig.memory
        .read_slice(&mut status, GuestAddress(0x1_f000))
        .unwrap();
    assert_eq!(status, [VIRTIO_BLK_S_OK as u8; 2]);
    println!("FLUSHED");
    std::thread::sleep(std::time::Duration::from_secs(120));
}

fn kill_after_flush_keeps_the_write() {
    let image = std::env::temp_dir().join(format!("kvmkit-durability-{}", std::process::id()));
    std::fs::write(&image, vec![0u8; 64 * SECTOR_SIZE as usize]).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, &image)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "FLUSHED", "the child did not finish its flush");

    // SIGKILL: no destructor, no exit handler, nothing flushed on the way out.
    child.kill().unwrap();
    let status = child.wait().unwrap();

    let contents = std::fs::read(&image).unwrap();
    std::fs::remove_file(&image).unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    let start = (SECTOR * SECTOR_SIZE) as usize;
    assert_eq!(
        contents[start..start + SECTOR_SIZE as usize],
        [PATTERN; SECTOR_SIZE as usize]
    );
    assert_eq!(contents[..start], vec![0u8; start][..]);
}
