// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! virtio-blk's request path against the system calls it makes, on the same file in
//! the same run: 4 KiB random reads (`pread`) and 64 KiB sequential writes (`pwrite`),
//! in batches of one notification each. Both sides move the same data through the
//! same amount of memory: the system calls, like the driver's requests, each use a
//! buffer of their own. The device side is timed from the notify to
//! the last completion: the transport's notify, the I/O thread's event loop turn, the
//! rings and chain checks, the file I/O straight to and from guest memory, the status
//! bytes, the used ring and the interrupt. Writing the requests into guest memory is
//! the driver's work and is not timed; neither is making the sector list on the other
//! side.
//!
//! ```text
//! cargo bench -p kvmkit-virtio --bench block
//! ```

// Test code: the values cast are small constants and sizes this file chose (queue
// slots, sector numbers, test buffer lengths), which its own assertions would catch
// truncating.
#![allow(clippy::cast_possible_truncation)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

mod common;
use common::Driven;
use kvmkit_virtio::Block;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

const DISK: u64 = 64 << 20;
const HEADERS: u64 = 0x4_0000;
const STATUS: u64 = 0x3_0000;
const DATA: u64 = 0x10_0000;

/// A block device driven from this thread, its requests laid out as chains of
/// header, data and status starting at descriptor 3n.
struct Device(Driven);

impl Device {
    fn new(file: File) -> Self {
        let block = Block::with_file(file, DISK, false, b"bench");
        Device(Driven::new(Box::new(block), 1, 0))
    }

    /// Lays out `count` requests on `len`-byte data buffers (device-writable for
    /// reads).
    fn chains(&self, count: u16, len: u32, read: bool) {
        let data_flags = if read { VRING_DESC_F_WRITE } else { 0 };
        for n in 0..count {
            let base = 3 * n;
            let data = DATA + u64::from(n) * u64::from(len);
            let header = HEADERS + 16 * u64::from(n);
            self.0
                .store(0, base, header, 16, VRING_DESC_F_NEXT, base + 1);
            self.0.store(
                0,
                base + 1,
                data,
                len,
                data_flags | VRING_DESC_F_NEXT,
                base + 2,
            );
            self.0
                .store(0, base + 2, STATUS + u64::from(n), 1, VRING_DESC_F_WRITE, 0);
        }
    }

    /// Runs one batch: a request of `kind` at each sector of `sectors`, one notify;
    /// returns the device's time.
    fn batch(&mut self, kind: u32, sectors: &[u64]) -> Duration {
        for (n, sector) in sectors.iter().enumerate() {
            let mut header = [0u8; 16];
            header[..4].copy_from_slice(&kind.to_le_bytes());
            header[8..].copy_from_slice(&sector.to_le_bytes());
            let at = GuestAddress(HEADERS + 16 * n as u64);
            self.0.memory.write_slice(&header, at).unwrap();
        }
        self.0.run(0, (0..sectors.len() as u16).map(|n| 3 * n))
    }
}

/// A scratch disk image, written through once so that both sides read the page cache.
fn image() -> (File, std::path::PathBuf) {
    let path = std::env::temp_dir().join(format!("kvmkit-bench-blk-{}", std::process::id()));
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let chunk = vec![0x5au8; 1 << 20];
    for n in 0..DISK >> 20 {
        file.write_all_at(&chunk, n << 20).unwrap();
    }
    (file, path)
}

/// Pseudo-random 4 KiB-aligned sectors, the same for both sides.
fn random_sectors(count: usize, seed: u64) -> Vec<u64> {
    let mut state = seed | 1;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % (DISK / 4096)) * 8
        })
        .collect()
}

fn block(c: &mut Criterion) {
    const READS: u16 = 64;
    const WRITES: u16 = 16;
    let (file, path) = image();
    let mut device = Device::new(file.try_clone().unwrap());
    let mut group = c.benchmark_group("virtio_blk");

    device.chains(READS, 4096, true);
    let mut seed = 1;
    group.bench_function("random_read_4k_x64/kvmkit", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    seed += 1;
                    device.batch(0, &random_sectors(usize::from(READS), seed))
                })
                .sum()
        })
    });
    // The same data movement as the device's: each request into a buffer of its own,
    // as a driver's requests in flight are.
    let mut buffers = vec![0u8; usize::from(READS) * 4096];
    group.bench_function("random_read_4k_x64/pread", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    seed += 1;
                    preads(
                        &file,
                        &mut buffers,
                        &random_sectors(usize::from(READS), seed),
                    )
                })
                .sum()
        })
    });

    device.chains(WRITES, 64 << 10, false);
    let mut next = 0u64;
    group.bench_function("sequential_write_64k_x16/kvmkit", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let sectors = sequential_sectors(&mut next, WRITES);
                    device.batch(1, &sectors)
                })
                .sum()
        })
    });
    let data = vec![0xa5u8; usize::from(WRITES) * (64 << 10)];
    group.bench_function("sequential_write_64k_x16/pwrite", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| pwrites(&file, &data, &sequential_sectors(&mut next, WRITES)))
                .sum()
        })
    });
    group.finish();

    interleaved(&mut device, &file, &mut buffers, &data);
    std::fs::remove_file(path).unwrap();
}

/// The 4 KiB reads of `buffers` at `sectors` through `pread`, timed.
fn preads(file: &File, buffers: &mut [u8], sectors: &[u64]) -> Duration {
    let start = Instant::now();
    for (buffer, sector) in buffers.chunks_mut(4096).zip(sectors) {
        file.read_exact_at(buffer, sector * 512).unwrap();
    }
    start.elapsed()
}

/// The 64 KiB writes of `data` at `sectors` through `pwrite`, timed.
fn pwrites(file: &File, data: &[u8], sectors: &[u64]) -> Duration {
    let start = Instant::now();
    for (buffer, sector) in data.chunks(64 << 10).zip(sectors) {
        file.write_all_at(buffer, sector * 512).unwrap();
    }
    start.elapsed()
}

/// The ratio the issue asks for, with the drift of a noisy host taken out: batches of
/// the device and of the system calls alternate (in every order), on the same sectors, and the
/// ratio is of the two medians. Criterion's groups above run one side after the other,
/// seconds apart, and their ratio moves by ±0.1 from run to run on this host.
///
/// Two baselines: the system calls on this thread (what the device's work costs with
/// the hand-off to its worker included), and the same system calls on a thread of their
/// own woken as the device's worker is (the hand-off any design pays that keeps disk
/// I/O off the vCPU and I/O threads; the ratio is then the device's own work).
fn interleaved(device: &mut Device, file: &File, buffers: &mut [u8], data: &[u8]) {
    const ROUNDS: u64 = 6000;
    let worker = SyscallThread::spawn(file.try_clone().unwrap(), buffers.len(), data.to_vec());
    let report = |name: &str, mut sides: [Vec<Duration>; 3]| {
        let [kvmkit, here, there] = sides.each_mut().map(|side| {
            side.sort();
            side[side.len() / 2].as_secs_f64()
        });
        println!(
            "virtio_blk/{name}/interleaved ({ROUNDS} rounds, medians): kvmkit {:.2} µs; \
             system calls here {:.2} µs, ratio {:.3}; on a woken thread {:.2} µs, ratio {:.3}",
            kvmkit * 1e6,
            here * 1e6,
            here / kvmkit,
            there * 1e6,
            there / kvmkit,
        );
    };
    let mut sides: [Vec<Duration>; 3] = Default::default();
    device.chains(64, 4096, true);
    for round in 0..ROUNDS {
        let sectors = random_sectors(64, round + 1_000_000);
        for side in order(round) {
            sides[side].push(match side {
                0 => device.batch(0, &sectors),
                1 => preads(file, buffers, &sectors),
                _ => worker.batch(true, sectors.clone()),
            });
        }
    }
    report("random_read_4k_x64", sides);

    let mut sides: [Vec<Duration>; 3] = Default::default();
    device.chains(16, 64 << 10, false);
    let mut next = 0;
    for round in 0..ROUNDS {
        let sectors = sequential_sectors(&mut next, 16);
        for side in order(round) {
            sides[side].push(match side {
                0 => device.batch(1, &sectors),
                1 => pwrites(file, data, &sectors),
                _ => worker.batch(false, sectors.clone()),
            });
        }
    }
    report("sequential_write_64k_x16", sides);
}

/// The order of the three sides in `round`: each of the six in turn, so that each side
/// comes first, second and last (on the same sectors) equally often.
fn order(round: u64) -> [usize; 3] {
    const ORDERS: [[usize; 3]; 6] = [
        [0, 1, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
        [1, 0, 2],
        [0, 2, 1],
    ];
    ORDERS[(round % 6) as usize]
}

/// `pread`s or `pwrite`s on a thread of their own, which waits for a batch as the
/// device's worker does: it looks for one for 50 µs after the last, then sleeps on an
/// eventfd; a finished batch is signalled on another.
/// The batch posted (whether it reads, and its sectors; none: end), and whether it is new.
type Job = (Mutex<Option<(bool, Vec<u64>)>>, AtomicBool);

struct SyscallThread {
    job: Arc<Job>,
    wake: Arc<EventFd>,
    done: Arc<EventFd>,
}

impl SyscallThread {
    fn spawn(file: File, read_len: usize, data: Vec<u8>) -> Self {
        let job: Arc<Job> = Arc::default();
        let wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let done = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let (thread_job, thread_wake, thread_done) =
            (Arc::clone(&job), Arc::clone(&wake), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut buffers = vec![0u8; read_len];
            loop {
                let looking = Instant::now();
                while !thread_job.1.swap(false, Ordering::Acquire) {
                    if looking.elapsed() > Duration::from_micros(50) {
                        kvmkit_devices::wait_readable(
                            kvmkit_devices::event_fd(&thread_wake),
                            Duration::from_millis(100),
                        );
                        let _ = thread_wake.read();
                    }
                    std::hint::spin_loop();
                }
                match thread_job.0.lock().unwrap().take() {
                    Some((true, sectors)) => drop(preads(&file, &mut buffers, &sectors)),
                    Some((false, sectors)) => drop(pwrites(&file, &data, &sectors)),
                    None => return,
                }
                thread_done.write(1).unwrap();
            }
        });
        SyscallThread { job, wake, done }
    }

    /// Runs one batch there; the time from posting it to seeing it done.
    fn batch(&self, read: bool, sectors: Vec<u64>) -> Duration {
        *self.job.0.lock().unwrap() = Some((read, sectors));
        let start = Instant::now();
        self.job.1.store(true, Ordering::Release);
        self.wake.write(1).unwrap();
        while self.done.read().is_err() {}
        start.elapsed()
    }
}

impl Drop for SyscallThread {
    fn drop(&mut self) {
        self.job.0.lock().unwrap().take();
        self.job.1.store(true, Ordering::Release);
        let _ = self.wake.write(1);
    }
}

/// The next `count` 64 KiB extents from `next` on, wrapping before the disk's end.
fn sequential_sectors(next: &mut u64, count: u16) -> Vec<u64> {
    let sectors = (0..u64::from(count))
        .map(|n| (*next + n * 128) % (DISK / 512 - 128))
        .collect();
    *next += u64::from(count) * 128;
    sectors
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = block
}
criterion_main!(benches);
