// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! How a device raises its interrupt, without knowing the hypervisor.

use std::io;

use vmm_sys_util::eventfd::EventFd;

/// An interrupt line a device can raise (edge-triggered).
pub trait Interrupt: Send + Sync {
    /// Raises the interrupt once.
    fn trigger(&self) -> io::Result<()>;
}

/// An interrupt raised by writing an event fd. Registered with KVM as an irqfd (by the
/// VMM, not by this crate), a write injects the interrupt without an exit.
#[derive(Debug)]
pub struct EventFdInterrupt {
    event: EventFd,
}

impl EventFdInterrupt {
    /// A new interrupt with its own event fd.
    pub fn new() -> io::Result<Self> {
        Ok(EventFdInterrupt {
            event: EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?,
        })
    }

    /// The event fd, to register as an irqfd (or to poll, in tests).
    pub fn event(&self) -> &EventFd {
        &self.event
    }
}

impl Interrupt for EventFdInterrupt {
    fn trigger(&self) -> io::Result<()> {
        self.event.write(1)
    }
}

/// Adapts an [`Interrupt`] to vm-superio's trigger.
#[cfg(feature = "uart")]
pub(crate) struct SuperioTrigger(pub(crate) std::sync::Arc<dyn Interrupt>);

#[cfg(feature = "uart")]
impl vm_superio::Trigger for SuperioTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.trigger()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_writes_the_event_fd() {
        let interrupt = EventFdInterrupt::new().unwrap();

        interrupt.trigger().unwrap();
        interrupt.trigger().unwrap();

        assert_eq!(interrupt.event().read().unwrap(), 2);
    }
}
