// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What keeps guest memory mapped while KVM may reach it: held by the VM and by every
//! vCPU.

use std::any::Any;
use std::sync::{Arc, Mutex};

/// Every guest memory registered with a VM, kept mapped for as long as KVM may reach it.
///
/// KVM maps the host pages of a memslot into the guest until the VM is destroyed,
/// which is when its last file descriptor closes: the VM's and every vCPU's. So the
/// [`Vm`](crate::Vm) and each [`Vcpu`](crate::Vcpu) hold this, each declared after its file descriptor, and the
/// mappings are unmapped only after the last descriptor closed.
#[derive(Default)]
pub(crate) struct MemoryOwners(Mutex<Vec<Arc<dyn Any + Send + Sync>>>);

impl MemoryOwners {
    /// Keeps `owner` (what holds a memslot's mapping) until this is dropped.
    pub(crate) fn keep(&self, owner: Arc<dyn Any + Send + Sync>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(owner);
    }
}
