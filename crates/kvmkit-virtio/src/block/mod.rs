// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! virtio-blk on any [`BlockBackend`]: a raw image file or block device
//! ([`FileBackend`]), or a VMM's own storage.

mod backend;

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
    VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_BLK_ID_BYTES,
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
    VIRTIO_BLK_T_WRITE_ZEROES,
};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vm_memory::bitmap::Bitmap;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend as _};

pub use backend::{BlockBackend, BlockError, FileBackend, GuestSlice};

use crate::queue::{Buffer, Chain, ChainError, Served};
use crate::{
    read_config_from, ActivateError, Activation, DeviceLifecycle, GuestMemory, QueueCounters,
    VirtioDevice,
};

/// Bytes in a sector, as virtio-blk counts.
pub const SECTOR_SIZE: u64 = BLOCK_SIZE as u64;
/// The block size the device reports (`blk_size`): one sector.
const BLOCK_SIZE: u32 = 512;
const QUEUE_SIZE: u16 = 256;
/// The most data segments (descriptors besides the header and the status) one request
/// may carry: what the device advertises as `seg_max`, and enforces.
const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// The most bytes one data segment may hold: what the device advertises as
/// `size_max`, and enforces. With `SEG_MAX`, a request moves at most 254 MiB.
const SIZE_MAX: u32 = 1 << 20;
/// Bytes moved between the backend and guest memory per call.
const CHUNK: usize = 128 << 10;
/// The most segments one discard or write-zeroes request may carry.
const MAX_RANGES: u32 = 32;
/// The request header: type, reserved, sector.
const HEADER_LEN: usize = 16;
/// One discard or write-zeroes range: sector, sectors, flags.
const RANGE_LEN: usize = 16;
/// Write-zeroes flag: the device may unmap (punch a hole). No other flag is defined,
/// and discard takes none (virtio 1.2 §5.2.6.2).
const WRITE_ZEROES_UNMAP: u32 = 1;

/// A virtio block device: read, write, flush (`fdatasync`), get-id, discard and
/// write-zeroes (`fallocate`), on one queue, every sector range checked against the
/// capacity. A read-only disk advertises `VIRTIO_BLK_F_RO` and fails writes with
/// `IOERR`. Discard and write-zeroes are offered only when the image can punch holes
/// (probed when the disk is made: not on NFSv3, some FUSE file systems, or block
/// devices), so a guest's `fstrim` never turns into I/O errors.
///
/// Requests are served on a worker thread of the disk's own (`blk-worker`), so a slow
/// or hung backend stalls this disk alone: the I/O thread goes on with signals,
/// consoles and every other device.
pub struct Block {
    /// What each activation's worker serves, a copy apiece.
    disk: Disk,
    config: Vec<u8>,
    lifecycle: DeviceLifecycle,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block")
            .field("capacity", &self.disk.capacity)
            .field("readonly", &self.disk.readonly)
            .finish_non_exhaustive()
    }
}

impl Block {
    /// Opens the raw image or block device at `path`, read-only or read-write, and
    /// locks it (see [`FileBackend::open`]).
    pub fn open(path: &Path, readonly: bool) -> Result<Self, BlockError> {
        Ok(Self::new(FileBackend::open(path, readonly)?, readonly))
    }

    /// A disk on `file` of `size` bytes (whole sectors count), with `id` (its first
    /// 20 bytes) as its serial: what the guest reads as the disk's serial number
    /// (`/sys/block/vda/serial`), empty by default so that nothing of the host leaks.
    pub fn with_file(file: File, size: u64, readonly: bool, id: &[u8]) -> Self {
        Self::new(FileBackend::new(file, size, readonly), readonly).with_serial(id)
    }

    /// A disk on `backend`, with an empty serial.
    pub fn new(backend: impl BlockBackend + 'static, readonly: bool) -> Self {
        let capacity = backend.size() / SECTOR_SIZE;
        let punches_holes = !readonly && backend.punches_holes();
        Block {
            disk: Disk {
                backend: Arc::new(backend),
                capacity,
                readonly,
                punches_holes,
                id: serial(b""),
            },
            config: config_space(capacity),
            lifecycle: DeviceLifecycle::new(1),
        }
    }

    /// This disk with `id` (its first 20 bytes) as its serial, as Cloud Hypervisor's
    /// `--disk serial=` gives it.
    pub fn with_serial(mut self, id: &[u8]) -> Self {
        self.disk.id = serial(id);
        self
    }

    /// The capacity in sectors.
    pub fn capacity(&self) -> u64 {
        self.disk.capacity
    }
}

/// The 20 bytes of a serial: the first ones of `id`, NUL-padded.
fn serial(id: &[u8]) -> [u8; VIRTIO_BLK_ID_BYTES as usize] {
    let mut serial = [0u8; VIRTIO_BLK_ID_BYTES as usize];
    let len = id.len().min(serial.len());
    serial[..len].copy_from_slice(&id[..len]);
    serial
}

/// virtio_blk_config: capacity, seg_max, blk_size, and the discard and write-zeroes
/// limits, little-endian at their offsets.
fn config_space(capacity: u64) -> Vec<u8> {
    let mut config = vec![0u8; 60];
    let mut put =
        |offset: usize, bytes: &[u8]| config[offset..offset + bytes.len()].copy_from_slice(bytes);
    put(0, &capacity.to_le_bytes());
    put(8, &SIZE_MAX.to_le_bytes()); // size_max
    put(12, &SEG_MAX.to_le_bytes()); // seg_max
    put(20, &BLOCK_SIZE.to_le_bytes()); // blk_size
    put(36, &u32::MAX.to_le_bytes()); // max_discard_sectors
    put(40, &MAX_RANGES.to_le_bytes()); // max_discard_seg
    put(44, &1u32.to_le_bytes()); // discard_sector_alignment
    put(48, &u32::MAX.to_le_bytes()); // max_write_zeroes_sectors
    put(52, &MAX_RANGES.to_le_bytes()); // max_write_zeroes_seg
    put(56, &[1]); // write_zeroes_may_unmap
    config
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn features(&self) -> u64 {
        let mut features = (1u64 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_BLK_F_FLUSH)
            | (1 << VIRTIO_BLK_F_SEG_MAX)
            | (1 << VIRTIO_BLK_F_SIZE_MAX)
            | (1 << VIRTIO_BLK_F_BLK_SIZE);
        if self.disk.readonly {
            features |= 1 << VIRTIO_BLK_F_RO;
        } else if self.disk.punches_holes {
            features |= (1 << VIRTIO_BLK_F_DISCARD) | (1 << VIRTIO_BLK_F_WRITE_ZEROES);
        }
        features
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_from(&self.config, offset, data);
    }

    fn activate(&mut self, mut activation: Activation) -> Result<(), ActivateError> {
        let queue = activation.take_queue(0)?;
        let mut disk = self.disk.clone();
        self.lifecycle
            .serve_on_worker(&activation, queue, "blk-worker", move |memory, chain| {
                disk.serve(memory, chain)
            })
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

/// The disk as its worker serves it.
#[derive(Clone)]
struct Disk {
    backend: Arc<dyn BlockBackend>,
    /// In sectors.
    capacity: u64,
    readonly: bool,
    /// The backend punches holes: discard and write-zeroes are offered.
    punches_holes: bool,
    id: [u8; VIRTIO_BLK_ID_BYTES as usize],
}

/// A request status as the byte the driver reads (the bindings give them as `u32`).
// The assertion makes the cast exact; it runs at compile time for the constants below.
#[allow(clippy::cast_possible_truncation)]
const fn status_byte_of(status: u32) -> u8 {
    assert!(status <= 0xff);
    status as u8
}

const STATUS_OK: u8 = status_byte_of(VIRTIO_BLK_S_OK);
const STATUS_IOERR: u8 = status_byte_of(VIRTIO_BLK_S_IOERR);
const STATUS_UNSUPP: u8 = status_byte_of(VIRTIO_BLK_S_UNSUPP);

/// A request's failure, with the status the driver gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    IoError,
    Unsupported,
}

impl Failure {
    fn status(self) -> u8 {
        match self {
            Failure::IoError => STATUS_IOERR,
            Failure::Unsupported => STATUS_UNSUPP,
        }
    }
}

impl Disk {
    fn serve(&mut self, memory: &GuestMemory, chain: Result<&Chain, ChainError>) -> Served {
        let Ok(chain) = chain else {
            return Served::FAILED;
        };
        // The status byte is the last byte of the last device-writable buffer; without
        // one the request cannot even be answered.
        let Some(status) = status_byte(&chain.writable) else {
            return Served::FAILED;
        };
        let data_in = Segments::new(&chain.writable, status.len_before);
        let mut readable = Segments::new(&chain.readable, total(&chain.readable));
        let result = within_limits(chain)
            .and_then(|()| read_header(memory, &mut readable))
            .and_then(|(kind, sector)| self.execute(memory, kind, sector, readable, data_in));
        let (status_value, written, bytes, failed) = match result {
            Ok(done) => (STATUS_OK, done.written, done.bytes, false),
            Err(failure) => (failure.status(), 0, 0, true),
        };
        if memory.write_obj(status_value, status.addr).is_err() {
            return Served::FAILED;
        }
        Served {
            // The walk keeps a chain's lengths within 2^32 - 1 bytes in all.
            written: u32::try_from(written + 1).unwrap_or(u32::MAX),
            bytes,
            failed,
            continues: false,
        }
    }

    fn execute(
        &mut self,
        memory: &GuestMemory,
        kind: u32,
        sector: u64,
        data_out: Segments,
        data_in: Segments,
    ) -> Result<Done, Failure> {
        match kind {
            // Data the wrong way round (device-readable buffers to read into, or
            // device-writable ones to write from) is refused, as is no data at all.
            VIRTIO_BLK_T_IN if data_out.len != 0 || data_in.len == 0 => Err(Failure::IoError),
            VIRTIO_BLK_T_OUT if data_in.len != 0 || data_out.len == 0 => Err(Failure::IoError),
            VIRTIO_BLK_T_IN => self.read(memory, sector, data_in),
            VIRTIO_BLK_T_OUT => self.write(memory, sector, data_out),
            VIRTIO_BLK_T_FLUSH => {
                self.backend.flush().map_err(|_| Failure::IoError)?;
                Ok(Done::default())
            }
            VIRTIO_BLK_T_GET_ID => {
                let len = usize::try_from(data_in.len)
                    .unwrap_or(usize::MAX)
                    .min(self.id.len());
                let id = self.id;
                data_in.write(memory, &id[..len])?;
                Ok(Done {
                    written: len as u64,
                    bytes: 0,
                })
            }
            VIRTIO_BLK_T_DISCARD => self.ranges(memory, data_out, false),
            VIRTIO_BLK_T_WRITE_ZEROES => self.ranges(memory, data_out, true),
            _ => Err(Failure::Unsupported),
        }
    }

    /// The byte offset of `sectors` sectors from `sector`, checked against the disk.
    fn range(&self, sector: u64, bytes: u64) -> Result<u64, Failure> {
        if bytes % SECTOR_SIZE != 0 {
            return Err(Failure::IoError);
        }
        let end = sector
            .checked_add(bytes / SECTOR_SIZE)
            .ok_or(Failure::IoError)?;
        if end > self.capacity {
            return Err(Failure::IoError);
        }
        Ok(sector * SECTOR_SIZE)
    }

    fn read(&mut self, memory: &GuestMemory, sector: u64, into: Segments) -> Result<Done, Failure> {
        let offset = self.range(sector, into.len)?;
        self.transfer(memory, offset, &into, |backend, slice, at| {
            let read = backend.read_at(slice, at)?;
            slice.bitmap().mark_dirty(0, read);
            Ok(read)
        })?;
        Ok(Done {
            written: into.len,
            bytes: into.len,
        })
    }

    fn write(
        &mut self,
        memory: &GuestMemory,
        sector: u64,
        from: Segments,
    ) -> Result<Done, Failure> {
        if self.readonly {
            return Err(Failure::IoError);
        }
        let offset = self.range(sector, from.len)?;
        self.transfer(memory, offset, &from, |backend, slice, at| {
            backend.write_at(slice, at)
        })?;
        Ok(Done {
            written: 0,
            bytes: from.len,
        })
    }

    /// Moves `segments` between guest memory and the backend from byte `offset` on,
    /// `CHUNK` bytes at most per call of `call(backend, slice, offset)`, going on where
    /// a short one stopped; an error or no progress (the end of the storage) fails the
    /// request. A buffer across two memory regions is moved a region at a time.
    fn transfer(
        &self,
        memory: &GuestMemory,
        mut offset: u64,
        segments: &Segments,
        mut call: impl FnMut(&dyn BlockBackend, &GuestSlice<'_>, u64) -> io::Result<usize>,
    ) -> Result<(), Failure> {
        for (addr, len) in segments.chunks(CHUNK) {
            // Within one memory region, as nearly every buffer is: one lookup.
            if let Ok(slice) = memory.get_slice(addr, len) {
                offset = self.move_slice(&slice, offset, &mut call)?;
                continue;
            }
            for slice in memory.get_slices(addr, len) {
                let slice = slice.map_err(|_| Failure::IoError)?;
                offset = self.move_slice(&slice, offset, &mut call)?;
            }
        }
        Ok(())
    }

    /// Moves `slice` with `call` from byte `offset` on, going on where a short call
    /// stopped; returns the offset past it.
    fn move_slice(
        &self,
        slice: &GuestSlice<'_>,
        mut offset: u64,
        call: &mut impl FnMut(&dyn BlockBackend, &GuestSlice<'_>, u64) -> io::Result<usize>,
    ) -> Result<u64, Failure> {
        let mut at = 0;
        while at < slice.len() {
            let moved = if at == 0 {
                call(&*self.backend, slice, offset)
            } else {
                let rest = slice
                    .subslice(at, slice.len() - at)
                    .map_err(|_| Failure::IoError)?;
                call(&*self.backend, &rest, offset)
            };
            match moved {
                Ok(0) => return Err(Failure::IoError),
                Ok(moved) => {
                    at += moved;
                    offset += moved as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Failure::IoError),
            }
        }
        Ok(offset)
    }

    /// Discard (punch holes) or write zeroes over each range the request lists.
    fn ranges(
        &mut self,
        memory: &GuestMemory,
        from: Segments,
        zeroes: bool,
    ) -> Result<Done, Failure> {
        if self.readonly {
            return Err(Failure::IoError);
        }
        if !self.punches_holes {
            // Not offered: a driver that sends it anyway gets what the spec says.
            return Err(Failure::Unsupported);
        }
        if from.len == 0
            || from.len % RANGE_LEN as u64 != 0
            || from.len / RANGE_LEN as u64 > u64::from(MAX_RANGES)
        {
            return Err(Failure::IoError);
        }
        let mut bytes = vec![0u8; usize::try_from(from.len).map_err(|_| Failure::IoError)?];
        from.read(memory, &mut bytes)?;
        // Every range is checked before any is applied: a request is refused whole.
        let mut ranges = Vec::with_capacity(bytes.len() / RANGE_LEN);
        for range in bytes.chunks_exact(RANGE_LEN) {
            let sector = u64::from_le_bytes(range[..8].try_into().expect("8 bytes"));
            let sectors = u32::from_le_bytes(range[8..12].try_into().expect("4 bytes"));
            let flags = u32::from_le_bytes(range[12..16].try_into().expect("4 bytes"));
            let allowed = if zeroes { WRITE_ZEROES_UNMAP } else { 0 };
            if flags & !allowed != 0 {
                return Err(Failure::Unsupported);
            }
            let len = u64::from(sectors) * SECTOR_SIZE;
            let offset = self.range(sector, len)?;
            let unmap = flags & WRITE_ZEROES_UNMAP != 0;
            ranges.push((offset, len, unmap));
        }
        let mut done = 0u64;
        for (offset, len, unmap) in ranges {
            self.deallocate(offset, len, zeroes, unmap)?;
            done += len;
        }
        Ok(Done {
            written: 0,
            bytes: done,
        })
    }

    fn deallocate(&self, offset: u64, len: u64, zeroes: bool, unmap: bool) -> Result<(), Failure> {
        let done = if zeroes {
            self.backend.write_zeroes(offset, len, unmap)
        } else {
            self.backend.discard(offset, len)
        };
        done.map_err(|_| Failure::IoError)
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Done {
    /// Bytes written into device-writable buffers, status byte not included.
    written: u64,
    /// Bytes moved between guest memory and the disk.
    bytes: u64,
}

/// Where the status byte goes, and the writable bytes before it.
struct StatusByte {
    addr: GuestAddress,
    len_before: u64,
}

/// Whether `chain` keeps to what the device advertised: `seg_max` data segments
/// besides the header and the status, each of at most `size_max` bytes. The header
/// and status share their buffers with data in some drivers, so buffers are counted,
/// not roles.
fn within_limits(chain: &Chain) -> Result<(), Failure> {
    let buffers = chain.readable.len() + chain.writable.len();
    let oversized = chain
        .readable
        .iter()
        .chain(&chain.writable)
        .any(|buffer| buffer.len > SIZE_MAX);
    if buffers > SEG_MAX as usize + 2 || oversized {
        return Err(Failure::IoError);
    }
    Ok(())
}

fn status_byte(writable: &[Buffer]) -> Option<StatusByte> {
    let last = writable.iter().rev().find(|b| b.len > 0)?;
    Some(StatusByte {
        addr: GuestAddress(last.addr.0 + u64::from(last.len) - 1),
        len_before: total(writable) - 1,
    })
}

fn total(buffers: &[Buffer]) -> u64 {
    buffers.iter().map(|b| u64::from(b.len)).sum()
}

/// The first `len` bytes of a list of buffers, from a byte offset into them.
#[derive(Debug, Clone)]
struct Segments<'a> {
    buffers: &'a [Buffer],
    skip: u64,
    len: u64,
}

impl<'a> Segments<'a> {
    fn new(buffers: &'a [Buffer], len: u64) -> Self {
        Segments {
            buffers,
            skip: 0,
            len,
        }
    }

    /// Drops the first `n` bytes.
    fn advance(&mut self, n: u64) {
        self.skip += n;
        self.len -= n;
    }

    /// (address, length) pieces of at most `max` bytes, in order.
    fn chunks(&self, max: usize) -> impl Iterator<Item = (GuestAddress, usize)> + '_ {
        let mut skip = self.skip;
        let mut left = self.len;
        self.buffers.iter().flat_map(move |buffer| {
            let len = u64::from(buffer.len);
            let start = skip.min(len);
            skip -= start;
            let take = (len - start).min(left);
            left -= take;
            let base = buffer.addr.0 + start;
            (0..take.div_ceil(max as u64)).map(move |n| {
                let offset = n * max as u64;
                (
                    GuestAddress(base + offset),
                    usize::try_from((take - offset).min(max as u64)).unwrap_or(max),
                )
            })
        })
    }

    fn read(&self, memory: &GuestMemory, into: &mut [u8]) -> Result<(), Failure> {
        let mut at = 0;
        for (addr, len) in self.chunks(usize::MAX) {
            let len = len.min(into.len() - at);
            memory
                .read_slice(&mut into[at..at + len], addr)
                .map_err(|_| Failure::IoError)?;
            at += len;
        }
        if at == into.len() {
            Ok(())
        } else {
            Err(Failure::IoError)
        }
    }

    fn write(&self, memory: &GuestMemory, from: &[u8]) -> Result<(), Failure> {
        let mut at = 0;
        for (addr, len) in self.chunks(usize::MAX) {
            let len = len.min(from.len() - at);
            if len == 0 {
                break;
            }
            memory
                .write_slice(&from[at..at + len], addr)
                .map_err(|_| Failure::IoError)?;
            at += len;
        }
        Ok(())
    }
}

/// Reads the 16-byte header from the start of the readable bytes and moves past it.
fn read_header(memory: &GuestMemory, readable: &mut Segments) -> Result<(u32, u64), Failure> {
    if readable.len < HEADER_LEN as u64 {
        return Err(Failure::IoError);
    }
    let header = Segments {
        len: HEADER_LEN as u64,
        ..readable.clone()
    };
    let mut bytes = [0u8; HEADER_LEN];
    header.read(memory, &mut bytes)?;
    readable.advance(HEADER_LEN as u64);
    let kind = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
    let sector = u64::from_le_bytes(bytes[8..].try_into().expect("8 bytes"));
    Ok((kind, sector))
}
