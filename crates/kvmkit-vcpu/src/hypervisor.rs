// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The KVM device: opening it and checking what it can do.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Cap, Kvm};

use crate::Error;

/// The stable KVM API version; every kernel since 2.6.22 reports it.
const KVM_API_VERSION: i32 = 12;

/// Capabilities without which kvmkit cannot run a vCPU the way it does.
const REQUIRED_CAPS: [(Cap, &str); 4] = [
    (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
    (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR"),
    (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
    (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
];

/// An open `/dev/kvm` whose API version and required capabilities were checked.
#[derive(Debug)]
pub struct Hypervisor {
    kvm: Kvm,
    path: PathBuf,
}

impl Hypervisor {
    /// The usual path of the KVM device.
    pub const DEFAULT_PATH: &'static str = "/dev/kvm";

    /// Opens `/dev/kvm`.
    pub fn open() -> Result<Self, Error> {
        Self::open_at(Self::DEFAULT_PATH)
    }

    /// Opens the KVM device at `path`, which a test or a sandbox may place elsewhere.
    ///
    /// Fails with [`Error::DeviceMissing`] or [`Error::PermissionDenied`], each naming
    /// the path and the fix, before anything else is tried.
    pub fn open_at(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref().to_path_buf();
        if path.as_os_str().is_empty() {
            return Err(Error::EmptyPath);
        }
        let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::Open {
            path: path.clone(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"),
        })?;
        let kvm = Kvm::new_with_path(&c_path).map_err(|e| open_error(&path, e))?;
        check_is_kvm_device(&path)?;
        let found = kvm.get_api_version();
        if found < 0 {
            return Err(Error::NotKvmDevice {
                path,
                reason: "it does not answer KVM_GET_API_VERSION",
            });
        }
        if found != KVM_API_VERSION {
            return Err(Error::ApiVersion { found });
        }
        for (cap, name) in REQUIRED_CAPS {
            if !kvm.check_extension(cap) {
                return Err(Error::MissingCapability(name));
            }
        }
        Ok(Hypervisor { kvm, path })
    }

    /// The path the device was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether KVM offers `cap`.
    pub fn has(&self, cap: Cap) -> bool {
        self.kvm.check_extension(cap)
    }

    /// The most vCPUs KVM allows in one VM.
    pub fn max_vcpus(&self) -> usize {
        self.kvm.get_max_vcpus()
    }

    /// The CPUID leaves KVM can present to a guest on this host, with the TSC-deadline
    /// timer bit set when KVM emulates it (`KVM_CAP_TSC_DEADLINE_TIMER`): KVM leaves
    /// that bit to the VMM, and a kernel without it calibrates its local APIC timer.
    pub fn supported_cpuid(&self) -> Result<CpuId, Error> {
        let mut cpuid = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(Error::kvm("KVM_GET_SUPPORTED_CPUID"))?;
        if self.kvm.check_extension(Cap::TscDeadlineTimer) {
            crate::x86::cpuid::set_tsc_deadline(cpuid.as_mut_slice());
        }
        Ok(cpuid)
    }

    /// The kvm-ioctls handle, for what this crate does not wrap.
    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }
}

/// KVM's device is a character device that answers `KVM_GET_API_VERSION`; anything
/// else (a regular file, `/dev/null`) is named as what it is.
fn check_is_kvm_device(path: &Path) -> Result<(), Error> {
    let not_kvm = |reason| Error::NotKvmDevice {
        path: path.to_path_buf(),
        reason,
    };
    let file_type = std::fs::metadata(path)
        .map_err(|source| Error::Open {
            path: path.to_path_buf(),
            source,
        })?
        .file_type();
    if !file_type.is_char_device() {
        return Err(not_kvm("it is not a character device"));
    }
    Ok(())
}

fn open_error(path: &Path, error: vmm_sys_util::errno::Error) -> Error {
    if error.errno() == libc::EISDIR {
        return Error::NotKvmDevice {
            path: path.to_path_buf(),
            reason: "it is a directory",
        };
    }
    let source = io::Error::from_raw_os_error(error.errno());
    match source.kind() {
        io::ErrorKind::NotFound => Error::DeviceMissing {
            path: path.to_path_buf(),
        },
        io::ErrorKind::PermissionDenied => Error::PermissionDenied {
            path: path.to_path_buf(),
        },
        _ => Error::Open {
            path: path.to_path_buf(),
            source,
        },
    }
}
