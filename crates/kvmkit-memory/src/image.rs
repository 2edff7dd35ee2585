// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Where a sparse memory image (a snapshot's memory file) holds data: the rest are
//! holes, which read as zero and need neither reading nor mapping from the file.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// The runs of data (not holes) of `file` between byte `start` and byte `end`, as
/// `(first, past the last)` byte offsets, in order (`SEEK_DATA`/`SEEK_HOLE`; a file
/// system that keeps no holes reports the whole range as data).
pub fn data_runs(file: &File, start: u64, end: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut runs = Vec::new();
    let mut at = start;
    while at < end {
        let Some(data) = seek(file, at, libc::SEEK_DATA)? else {
            break;
        };
        if data >= end {
            break;
        }
        let hole = seek(file, data, libc::SEEK_HOLE)?.unwrap_or(end).min(end);
        runs.push((data, hole));
        at = hole;
    }
    Ok(runs)
}

/// The first byte of data of `file` at or after byte `offset`; `None` if only a
/// hole (or nothing) follows.
pub fn next_data(file: &File, offset: u64) -> io::Result<Option<u64>> {
    seek(file, offset, libc::SEEK_DATA)
}

/// The next offset from `offset` that `whence` (`SEEK_DATA` or `SEEK_HOLE`) finds;
/// `None` when there is none past it (`ENXIO`).
fn seek(file: &File, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let offset = libc::off_t::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: lseek on a descriptor this function borrows; no memory is passed.
    let found = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
    if found < 0 {
        let error = io::Error::last_os_error();
        return if error.raw_os_error() == Some(libc::ENXIO) {
            Ok(None)
        } else {
            Err(error)
        };
    }
    Ok(Some(found.unsigned_abs()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    const MIB: u64 = 1 << 20;

    /// An 8 MiB sparse file with a page of data at 1 MiB and at 6 MiB.
    fn sparse_file() -> vmm_sys_util::tempfile::TempFile {
        let file = vmm_sys_util::tempfile::TempFile::new().unwrap();
        file.as_file().set_len(8 * MIB).unwrap();
        file.as_file().write_all_at(&[1u8; 4096], MIB).unwrap();
        file.as_file().write_all_at(&[2u8; 4096], 6 * MIB).unwrap();
        file
    }

    #[test]
    fn data_runs_skip_the_holes_of_a_sparse_file() {
        let file = sparse_file();

        let runs = data_runs(file.as_file(), 0, 8 * MIB).unwrap();

        // Filesystems round data to their blocks: each write is inside one run.
        assert_eq!(runs.len(), 2, "{runs:x?}");
        assert!(runs[0].0 <= MIB && runs[0].1 >= MIB + 4096, "{runs:x?}");
        assert!(
            runs[1].0 <= 6 * MIB && runs[1].1 >= 6 * MIB + 4096,
            "{runs:x?}"
        );
    }

    #[test]
    fn next_data_finds_the_next_run_or_none_past_the_last() {
        let file = sparse_file();

        let after_start = next_data(file.as_file(), 0).unwrap();
        let after_last = next_data(file.as_file(), 7 * MIB).unwrap();

        assert!(after_start.is_some_and(|at| at <= MIB), "{after_start:x?}");
        assert_eq!(after_last, None);
    }
}
