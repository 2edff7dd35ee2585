// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A paused VM saved to a directory, and restored from it into a machine built as the
//! saved one was.
//!
//! The directory holds two files:
//! - `state.json`: a first line `kvmkit-snapshot <version> <checksum>` and then the
//!   state as JSON (each vCPU's and the VM's KVM state, the guest RAM's layout, COM1,
//!   the virtio devices' slots, and the VMM's own configuration). The checksum (64-bit
//!   FNV-1a of the JSON) is verified, and the version checked, before anything is
//!   restored: a truncated, corrupted or foreign file is refused with an error.
//! - `memory`: guest RAM, region after region, written sparse: a page of zeroes is a
//!   hole. A machine built on it ([`MachineBuilder::memory_image`](crate::MachineBuilder::memory_image))
//!   maps it privately, as Firecracker's file backend does: a page is read when the
//!   guest first touches it and copied when first written, so a restore copies nothing
//!   and costs neither the file's size nor guest RAM's. Hugepage and shared backings
//!   cannot map a file privately: their restore copies the data the file holds
//!   (`SEEK_DATA`/`SEEK_HOLE`) into the new RAM, which costs what the guest had
//!   touched, and keeps hugepages hugepages.
//!
//! Each file is written under a `.partial` name and renamed into place, so a snapshot
//! taken into the directory a running VM was restored from does not change the file
//! that VM's RAM maps. Nothing else may change or shrink a memory file while a VM
//! maps it (a page past a shrunk file's end faults with `SIGBUS`).
//!
//! A virtio device is saved as its transport holds it (status, features, each queue's
//! rings and how far it went), taken while the device is paused, so that every chain
//! it took is in the used ring; restored, it starts again as the driver had started
//! it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use kvmkit_devices::UartState;
use kvmkit_memory::GuestRam;
use kvmkit_vcpu::x86::{VcpuState, VmState, STATE_VERSION};
use kvmkit_virtio::TransportState;
use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestAddress};

/// The version of the snapshot's layout this kvmkit reads and writes.
pub const SNAPSHOT_VERSION: u32 = 1;
/// The first word of a state file.
const MAGIC: &str = "kvmkit-snapshot";
/// The state file's name in a snapshot's directory.
pub const STATE_FILE: &str = "state.json";
/// The memory file's name in a snapshot's directory.
pub const MEMORY_FILE: &str = "memory";
/// The suffix of a file being written, until it is renamed into place.
const PARTIAL: &str = ".partial";
/// What is copied at once between guest RAM and the memory file.
const CHUNK: usize = 2 << 20;
const PAGE: usize = 4096;

/// Why a snapshot could not be taken, read or restored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// A file of the snapshot could not be read or written.
    #[error("{path}: cannot {what}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The directory to write a snapshot into does not exist (it is not made).
    #[error("{path} is not an existing directory")]
    NoDirectory {
        /// The path.
        path: PathBuf,
    },
    /// The state file is not a kvmkit snapshot's.
    #[error("{path} is not a kvmkit snapshot's state file")]
    NotASnapshot {
        /// The file.
        path: PathBuf,
    },
    /// The state file is of a version this kvmkit does not read.
    #[error("the snapshot is of version {found}; this kvmkit reads version {supported}")]
    Version {
        /// The file's version.
        found: u32,
        /// The version read here.
        supported: u32,
    },
    /// The state does not match its checksum: truncated or corrupted.
    #[error("{path}: the state does not match its checksum (truncated or corrupted)")]
    Checksum {
        /// The file.
        path: PathBuf,
    },
    /// The state's JSON does not describe a VM.
    #[error("{path}: the state is malformed: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What serde said.
        reason: String,
    },
    /// The machine restored into is not built as the saved one was.
    #[error("the snapshot's {what} is {saved}, this machine's {here}")]
    Mismatch {
        /// What differs.
        what: &'static str,
        /// The snapshot's.
        saved: String,
        /// This machine's.
        here: String,
    },
    /// A virtio device's state could not be put back.
    #[error("virtio device {slot} refused its state")]
    Device {
        /// Its slot.
        slot: usize,
        /// Why.
        #[source]
        source: kvmkit_virtio::TransportStateError,
    },
    /// The VM is not paused (a snapshot is taken of a paused VM only).
    #[error("the VM is not paused")]
    NotPaused,
    /// KVM refused to give or take a state.
    #[error("KVM refused the state")]
    Kvm(#[source] kvmkit_vcpu::Error),
    /// COM1 refused its state.
    #[error("COM1 refused its state")]
    Serial(#[source] std::io::Error),
}

/// A paused VM's state (its guest RAM is in the snapshot's memory file).
#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`kvmkit_vcpu::x86::STATE_VERSION`] of the KVM states.
    kvm_state_version: u32,
    vcpus: Vec<VcpuState>,
    vm: VmState,
    /// Guest RAM's regions, (guest address, size), in the memory file's order.
    ram: Vec<(u64, u64)>,
    serial: UartState,
    /// The virtio devices' transports, in slot order.
    virtio: Vec<TransportState>,
    /// What the VMM saved with the VM to rebuild its machine (the runner: its
    /// configuration).
    config: serde_json::Value,
}

/// What writing a snapshot wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotReport {
    /// Bytes of the state file.
    pub state_bytes: u64,
    /// Guest RAM's size (the memory file's length).
    pub memory_size: u64,
    /// Bytes of guest RAM written (pages that were not all zeroes).
    pub memory_written: u64,
}

impl Snapshot {
    /// A snapshot of these states, for a machine whose RAM is `ram`.
    pub(crate) fn new(
        vcpus: Vec<VcpuState>,
        vm: VmState,
        ram: &GuestRam,
        serial: UartState,
        virtio: Vec<TransportState>,
        config: serde_json::Value,
    ) -> Self {
        Snapshot {
            kvm_state_version: STATE_VERSION,
            vcpus,
            vm,
            ram: ram_regions(ram),
            serial,
            virtio,
            config,
        }
    }

    /// The VMM's configuration saved with the VM.
    pub fn config(&self) -> &serde_json::Value {
        &self.config
    }

    /// How many vCPUs the saved VM had.
    pub fn vcpu_count(&self) -> usize {
        self.vcpus.len()
    }

    /// Guest RAM's size.
    pub fn memory_size(&self) -> u64 {
        self.ram.iter().map(|(_, size)| size).sum()
    }

    pub(crate) fn vcpus(&self) -> &[VcpuState] {
        &self.vcpus
    }

    pub(crate) fn vm(&self) -> &VmState {
        &self.vm
    }

    pub(crate) fn serial(&self) -> &UartState {
        &self.serial
    }

    pub(crate) fn virtio(&self) -> &[TransportState] {
        &self.virtio
    }

    /// Writes the snapshot into `dir` (which must exist), guest RAM from `ram`.
    pub fn write_to(&self, dir: &Path, ram: &GuestRam) -> Result<SnapshotReport, SnapshotError> {
        if !dir.is_dir() {
            return Err(SnapshotError::NoDirectory {
                path: dir.to_path_buf(),
            });
        }
        // Each file is written whole under another name, then renamed over the old
        // one: a VM restored from a snapshot in `dir` maps its memory file, which must
        // not change under it (the renamed-over file lives on while mapped).
        let memory_partial = dir.join(format!("{MEMORY_FILE}{PARTIAL}"));
        let (memory_size, memory_written) = write_memory(&memory_partial, ram)?;
        let body = serde_json::to_vec(self).map_err(|e| SnapshotError::Malformed {
            path: dir.join(STATE_FILE),
            reason: e.to_string(),
        })?;
        let header = format!("{MAGIC} {SNAPSHOT_VERSION} {:016x}\n", fnv1a(&body));
        let state_partial = dir.join(format!("{STATE_FILE}{PARTIAL}"));
        let io = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| SnapshotError::Io { what, path, source }
        };
        let mut file = File::create(&state_partial).map_err(io("create", &state_partial))?;
        file.write_all(header.as_bytes())
            .and_then(|()| file.write_all(&body))
            .and_then(|()| file.sync_all())
            .map_err(io("write", &state_partial))?;
        for (partial, name) in [(&memory_partial, MEMORY_FILE), (&state_partial, STATE_FILE)] {
            std::fs::rename(partial, dir.join(name)).map_err(io("rename", partial))?;
        }
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io("sync", dir))?;
        Ok(SnapshotReport {
            state_bytes: (header.len() + body.len()) as u64,
            memory_size,
            memory_written,
        })
    }

    /// Reads the snapshot in `dir`: its version checked and its checksum verified
    /// before its state is parsed.
    pub fn read_from(dir: &Path) -> Result<Self, SnapshotError> {
        let path = dir.join(STATE_FILE);
        let mut text = Vec::new();
        File::open(&path)
            .and_then(|mut file| file.read_to_end(&mut text))
            .map_err(|source| SnapshotError::Io {
                what: "read",
                path: path.clone(),
                source,
            })?;
        Self::parse(&text, &path)
    }

    /// The snapshot whose state file (read from `path`) holds `text`: the header's
    /// version checked and the checksum verified before the state is parsed.
    pub fn parse(text: &[u8], path: &Path) -> Result<Self, SnapshotError> {
        let path = path.to_path_buf();
        let not_one = || SnapshotError::NotASnapshot { path: path.clone() };
        let newline = text.iter().position(|&b| b == b'\n').ok_or_else(not_one)?;
        let header = std::str::from_utf8(&text[..newline]).map_err(|_| not_one())?;
        let mut fields = header.split(' ');
        if fields.next() != Some(MAGIC) {
            return Err(not_one());
        }
        let version: u32 = fields
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(not_one)?;
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version {
                found: version,
                supported: SNAPSHOT_VERSION,
            });
        }
        let checksum = fields
            .next()
            .and_then(|c| u64::from_str_radix(c, 16).ok())
            .ok_or_else(not_one)?;
        let body = &text[newline + 1..];
        if fnv1a(body) != checksum {
            return Err(SnapshotError::Checksum { path });
        }
        let snapshot: Snapshot =
            serde_json::from_slice(body).map_err(|e| SnapshotError::Malformed {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if snapshot.kvm_state_version != STATE_VERSION {
            return Err(SnapshotError::Version {
                found: snapshot.kvm_state_version,
                supported: STATE_VERSION,
            });
        }
        Ok(snapshot)
    }

    /// The memory file of the snapshot in `dir`, opened, its length checked against
    /// the saved RAM's: what a machine's RAM can be mapped from
    /// ([`MachineBuilder::memory_image`](crate::MachineBuilder::memory_image)), so that
    /// a restore copies nothing. The file must stay as it is while a VM maps it.
    pub fn memory_image(&self, dir: &Path) -> Result<File, SnapshotError> {
        let path = dir.join(MEMORY_FILE);
        let io = |what| {
            let path = path.clone();
            move |source| SnapshotError::Io { what, path, source }
        };
        let file = File::open(&path).map_err(io("open"))?;
        let length = file.metadata().map_err(io("read the size of"))?.len();
        if length != self.memory_size() {
            return Err(SnapshotError::Mismatch {
                what: "memory file's length",
                saved: self.memory_size().to_string(),
                here: length.to_string(),
            });
        }
        Ok(file)
    }

    /// Checks that `ram` is laid out as the saved RAM was and copies the memory file
    /// of `dir` into it: only the data the file holds (its holes are zero pages, as
    /// fresh RAM's are).
    pub(crate) fn restore_memory(&self, dir: &Path, ram: &GuestRam) -> Result<(), SnapshotError> {
        let here = ram_regions(ram);
        if here != self.ram {
            return Err(SnapshotError::Mismatch {
                what: "guest RAM",
                saved: format!("{:x?}", self.ram),
                here: format!("{here:x?}"),
            });
        }
        let path = dir.join(MEMORY_FILE);
        let io = |what| {
            let path = path.clone();
            move |source| SnapshotError::Io { what, path, source }
        };
        let file = self.memory_image(dir)?;
        if let Some(image) = ram.image() {
            if same_file(image, &file).map_err(io("look at"))? {
                // RAM is already a private mapping of this very file.
                return Ok(());
            }
        }
        let mut buffer = vec![0u8; CHUNK];
        let mut file_offset = 0u64;
        for &(guest, size) in &self.ram {
            for (start, end) in
                kvmkit_memory::image::data_runs(&file, file_offset, file_offset + size)
                    .map_err(io("seek in"))?
            {
                let mut at = start;
                while at < end {
                    let len = usize::try_from(end - at).unwrap_or(CHUNK).min(CHUNK);
                    file.read_exact_at(&mut buffer[..len], at)
                        .map_err(io("read"))?;
                    ram.memory()
                        .write_slice(&buffer[..len], GuestAddress(guest + (at - file_offset)))
                        .map_err(|e| SnapshotError::Io {
                            what: "copy into guest RAM from",
                            path: path.clone(),
                            source: std::io::Error::other(e.to_string()),
                        })?;
                    at += len as u64;
                }
            }
            file_offset += size;
        }
        Ok(())
    }
}

/// Whether `a` and `b` are the same file (device and inode).
fn same_file(a: &File, b: &File) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (a.metadata()?, b.metadata()?);
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}

/// Guest RAM's regions as (guest address, size).
fn ram_regions(ram: &GuestRam) -> Vec<(u64, u64)> {
    ram.regions()
        .iter()
        .map(|region| (region.spec.guest_addr, region.spec.size))
        .collect()
}

/// Writes guest RAM into a new sparse file at `path`: (its length, bytes written).
/// Pages never touched ([`GuestRam::touched_pages`]) are not read; of the others, the
/// runs of pages that are not all zeroes are written, one write each.
fn write_memory(path: &Path, ram: &GuestRam) -> Result<(u64, u64), SnapshotError> {
    let io = |what| {
        let path = path.to_path_buf();
        move |source| SnapshotError::Io { what, path, source }
    };
    let file = File::create(path).map_err(io("create"))?;
    file.set_len(ram.size()).map_err(io("size"))?;
    let mut buffer = vec![0u8; CHUNK];
    let (mut file_offset, mut written) = (0u64, 0u64);
    for (index, region) in ram.regions().iter().enumerate() {
        let touched = ram.touched_pages(index).map_err(|e| SnapshotError::Io {
            what: "read which pages of guest RAM were touched for",
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let (guest, size) = (region.spec.guest_addr, region.spec.size);
        let mut at = 0u64;
        while at < size {
            let len = usize::try_from(size - at).unwrap_or(CHUNK).min(CHUNK);
            // At most CHUNK / PAGE pages from a page-aligned offset.
            let first_page = usize::try_from(at / PAGE as u64).unwrap_or(usize::MAX);
            let pages = touched.as_ref().map(|touched| {
                touched
                    .get(first_page..first_page + len / PAGE)
                    .unwrap_or(&[])
            });
            if pages.is_some_and(|pages| !pages.contains(&true)) {
                at += len as u64;
                continue;
            }
            ram.memory()
                .read_slice(&mut buffer[..len], GuestAddress(guest + at))
                .map_err(|e| SnapshotError::Io {
                    what: "copy guest RAM into",
                    path: path.to_path_buf(),
                    source: std::io::Error::other(e.to_string()),
                })?;
            let chunk = &buffer[..len];
            let data = |n: usize| {
                pages.is_none_or(|pages| pages.get(n).copied().unwrap_or(true))
                    && chunk[n * PAGE..(n + 1) * PAGE].iter().any(|&b| b != 0)
            };
            let mut page = 0;
            while page < len / PAGE {
                if !data(page) {
                    page += 1;
                    continue;
                }
                let start = page;
                while page < len / PAGE && data(page) {
                    page += 1;
                }
                let run = &chunk[start * PAGE..page * PAGE];
                let offset = file_offset + at + (start * PAGE) as u64;
                file.write_all_at(run, offset).map_err(io("write"))?;
                written += run.len() as u64;
                // The page that ended the run (if any) holds no data: not looked at again.
                page += 1;
            }
            at += len as u64;
        }
        file_offset += size;
    }
    file.sync_all().map_err(io("sync"))?;
    Ok((ram.size(), written))
}

/// 64-bit FNV-1a of `bytes`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_its_published_values() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
