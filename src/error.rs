// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What can go wrong while building, booting or running a machine.

/// What can go wrong while building or running a [`Machine`](crate::Machine).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Guest memory could not be laid out or mapped.
    #[error(transparent)]
    Memory(#[from] kvmkit_memory::Error),
    /// KVM refused an operation, or a vCPU failed.
    #[error(transparent)]
    Vcpu(#[from] kvmkit_vcpu::Error),
    /// The boot image could not be loaded.
    #[error(transparent)]
    Boot(#[from] kvmkit_boot::BootError),
    /// A device could not be placed on its bus.
    #[error(transparent)]
    Bus(#[from] kvmkit_devices::BusError),
    /// The machine's configuration cannot work.
    #[error("invalid machine configuration: {0}")]
    Config(String),
    /// The guest code does not fit in guest RAM where it loads.
    #[error("the guest code ({len} bytes at {load_addr:#x}) does not fit in guest RAM")]
    Load {
        /// Its length.
        len: usize,
        /// Where it loads.
        load_addr: u64,
        /// Why.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// A host resource (an event fd, epoll, the terminal, signals) failed.
    #[error("{what}")]
    Host {
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn host(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
        move |source| Error::Host { what, source }
    }
}
