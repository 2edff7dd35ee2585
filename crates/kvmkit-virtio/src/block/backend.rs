// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Where a disk's sectors live: the seam between the virtio-blk device and storage.
//! [`FileBackend`] is an image file or block device; a VMM brings its own storage
//! (a network block device, a copy-on-write format, a test's backend that never
//! completes) by implementing [`BlockBackend`].

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use vm_memory::bitmap::{AtomicBitmap, BS};
use vm_memory::VolatileSlice;

/// What can go wrong while opening a disk.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    /// The image cannot be opened.
    #[error("cannot open the disk image {path}")]
    Open {
        /// The path.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Another process (or another disk of this one) holds the image: a writer
    /// excludes everyone else, a reader excludes writers.
    #[error("the disk image {path} is in use: another VMM or disk has it open{}", if *.readonly { " for writing" } else { "" })]
    Locked {
        /// The path.
        path: String,
        /// Whether this disk asked to read only (so the holder writes).
        readonly: bool,
    },
    /// The image's size cannot be read.
    #[error("cannot read the size of the disk image {path}")]
    Size {
        /// The path.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// A run of guest memory a backend reads into or writes from, within one memory
/// region.
pub type GuestSlice<'a> = VolatileSlice<'a, BS<'a, AtomicBitmap>>;

/// A disk's storage. The device calls it on its own worker thread, never on the
/// thread that serves the VMM's other devices and signals, so a call may block (a
/// hung NFS server stalls that disk's queue, nothing else).
pub trait BlockBackend: Send + Sync {
    /// Bytes of storage.
    fn size(&self) -> u64;
    /// Reads into `into` from byte `offset`; returns how many bytes it read (fewer at
    /// the end of the storage, or when interrupted: the device asks again for the
    /// rest).
    fn read_at(&self, into: &GuestSlice<'_>, offset: u64) -> io::Result<usize>;
    /// Writes `from` at byte `offset`; returns how many bytes it wrote.
    fn write_at(&self, from: &GuestSlice<'_>, offset: u64) -> io::Result<usize>;
    /// Makes what was written durable.
    fn flush(&self) -> io::Result<()>;
    /// Whether [`discard`](Self::discard) and [`write_zeroes`](Self::write_zeroes)
    /// work: the device offers them to the guest only then.
    fn punches_holes(&self) -> bool {
        false
    }
    /// Deallocates `len` bytes from `offset`; they read as zeroes afterwards.
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Err(io::ErrorKind::Unsupported.into())
    }
    /// Zeroes `len` bytes from `offset`, deallocating them if `unmap`.
    fn write_zeroes(&self, offset: u64, len: u64, unmap: bool) -> io::Result<()> {
        let _ = (offset, len, unmap);
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// A raw image file or block device, read and written with `pread`/`pwrite` straight
/// into and out of guest memory.
#[derive(Debug)]
pub struct FileBackend {
    file: File,
    size: u64,
    punches_holes: bool,
}

impl FileBackend {
    /// Opens the raw image or block device at `path`, read-only or read-write, and
    /// locks it (an OFD lock, as QEMU takes): a second writer, or a reader while
    /// something writes, is refused with [`BlockError::Locked`].
    pub fn open(path: &Path, readonly: bool) -> Result<Self, BlockError> {
        // Quoted and escaped, as a path may hold control characters.
        let name = format!("{path:?}");
        let file = OpenOptions::new()
            .read(true)
            .write(!readonly)
            .open(path)
            .map_err(|source| BlockError::Open {
                path: name.clone(),
                source,
            })?;
        lock(&file, readonly).map_err(|source| match source.raw_os_error() {
            Some(libc::EAGAIN | libc::EACCES) => BlockError::Locked {
                path: name.clone(),
                readonly,
            },
            _ => BlockError::Open {
                path: name.clone(),
                source,
            },
        })?;
        let size = disk_size(&file).map_err(|source| BlockError::Size { path: name, source })?;
        Ok(Self::new(file, size, readonly))
    }

    /// Storage on `file`, of `size` bytes; whether it punches holes is probed unless
    /// it is `readonly`.
    pub fn new(file: File, size: u64, readonly: bool) -> Self {
        let punches_holes = !readonly && punches_holes(&file, size);
        FileBackend {
            file,
            size,
            punches_holes,
        }
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
        let offset = libc::off_t::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let len = libc::off_t::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: fallocate on a descriptor this backend owns; it changes the file,
        // never this process's memory.
        let ret = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, offset, len) };
        if ret == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl BlockBackend for FileBackend {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, into: &GuestSlice<'_>, offset: u64) -> io::Result<usize> {
        let offset = libc::off_t::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let guard = into.ptr_guard_mut();
        // SAFETY: the kernel writes at most `into.len()` bytes at `guard`'s pointer,
        // the guest memory `into` covers, which stays mapped while `into` lives; no Rust
        // reference is made to memory the guest shares.
        let read = unsafe {
            libc::pread(
                self.file.as_raw_fd(),
                guard.as_ptr().cast(),
                into.len(),
                offset,
            )
        };
        usize::try_from(read).map_err(|_| io::Error::last_os_error())
    }

    fn write_at(&self, from: &GuestSlice<'_>, offset: u64) -> io::Result<usize> {
        let offset = libc::off_t::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let guard = from.ptr_guard();
        // SAFETY: as for reads; the kernel only reads this guest memory. The guest may
        // change it meanwhile, which changes what is written, as on hardware.
        let written = unsafe {
            libc::pwrite(
                self.file.as_raw_fd(),
                guard.as_ptr().cast(),
                from.len(),
                offset,
            )
        };
        usize::try_from(written).map_err(|_| io::Error::last_os_error())
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn punches_holes(&self) -> bool {
        self.punches_holes
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        let mode = libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE;
        self.fallocate(mode, offset, len)
    }

    fn write_zeroes(&self, offset: u64, len: u64, unmap: bool) -> io::Result<()> {
        let keep = libc::FALLOC_FL_KEEP_SIZE;
        if !unmap
            && self
                .fallocate(keep | libc::FALLOC_FL_ZERO_RANGE, offset, len)
                .is_ok()
        {
            return Ok(());
        }
        self.fallocate(keep | libc::FALLOC_FL_PUNCH_HOLE, offset, len)
    }
}

/// Whether the image can punch holes: one page punched past its end, where there is
/// no data to lose (a block device refuses a range past its end, and is not probed
/// further: discarding there would need BLKDISCARD on data).
fn punches_holes(file: &File, size: u64) -> bool {
    let Ok(offset) = libc::off_t::try_from(size.next_multiple_of(4096)) else {
        return false;
    };
    // SAFETY: fallocate on a descriptor borrowed for the call; with KEEP_SIZE, past
    // the end, it changes no data and not the file's size.
    let ret = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE,
            offset,
            4096,
        )
    };
    ret == 0
}

/// Takes an open-file-description lock on the whole image, as QEMU does: shared for a
/// read-only disk, exclusive for a writable one. It lasts as long as the file is open
/// (in this process or a child it passed the descriptor to), and is released by the
/// kernel however the process ends.
// F_RDLCK, F_WRLCK and SEEK_SET are 0, 1 and 0: they fit flock's shorts.
#[allow(clippy::cast_possible_truncation)]
fn lock(file: &File, readonly: bool) -> io::Result<()> {
    // SAFETY: flock is plain data; all-zero is a valid value (whole file from 0).
    let mut range: libc::flock = unsafe { std::mem::zeroed() };
    range.l_type = if readonly {
        libc::F_RDLCK
    } else {
        libc::F_WRLCK
    } as libc::c_short;
    range.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: F_OFD_SETLK reads the flock it is given, which lives for the call, on a
    // descriptor this function borrows.
    let ret = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &range) };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn disk_size(file: &File) -> io::Result<u64> {
    use std::io::Seek;
    // A block device's metadata length is 0; seeking to the end works for both.
    let mut file = file;
    file.seek(io::SeekFrom::End(0))
}
