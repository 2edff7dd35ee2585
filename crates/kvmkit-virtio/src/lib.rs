// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

#![deny(missing_docs)]
//! Paravirtual devices for a VM: the virtio-mmio transport and virtio devices, on
//! rust-vmm's virtio-queue, with no KVM dependency.
//!
//! A driver posts many requests on a shared ring and notifies once; the notification
//! is an event fd (a KVM ioeventfd, registered through [`QueueNotifiers`], or the
//! transport itself when there is no such shortcut), and the device serves the queue
//! on the I/O thread's event loop and interrupts back through [`VirtioInterrupt`].
//!
//! - [`VirtioDevice`]: the seam through which a VMM adds device types.
//! - [`MmioTransport`]: the virtio-mmio (version 2) register window, a
//!   [`BusDevice`](kvmkit_devices::BusDevice) for an MMIO bus, with the status state
//!   machine enforced.
//! - [`queue`]: descriptor chains checked (loops, bounds, directions) before any device
//!   sees them, and queues served with notification suppression in both directions.
//! - Devices: [`Block`], [`Console`], [`Net`] (on a [`Tap`]), [`Rng`].
//!
//! Whatever the driver writes, the device answers with an error, a dropped request or
//! `DEVICE_NEEDS_RESET`, counts it, and the VMM goes on serving everything else.

mod block;
mod chain;
mod console;
mod device;
mod epoch;
mod interrupt;
mod lifecycle;
mod mmio;
mod net;
mod notify;
pub mod queue;
mod ring;
mod rng;

pub use block::{Block, BlockBackend, BlockError, FileBackend, GuestSlice, SECTOR_SIZE};
pub use console::{Console, ConsoleInputPort, CONSOLE_INPUT_BYTES};
pub use device::{
    read_config_from, ActivateError, Activation, ActiveQueue, GuestMemory, QueueCounters,
    VirtioDevice,
};
pub use epoch::{Epoch, Gate, Turn};
pub use interrupt::{DeviceFault, EventFdVirtioInterrupt, InterruptKind, VirtioInterrupt};
pub use lifecycle::DeviceLifecycle;
pub use mmio::{
    MmioTransport, TransportCounters, TransportState, TransportStateError, MMIO_WINDOW,
    QUEUE_NOTIFY,
};
pub use net::{DatagramBackend, Net, NetBackend, Offloads, Tap, TapError, NET_HEADER_LEN};
pub use notify::{NoShortcut, QueueNotifiers};
pub use ring::RingError;
pub use rng::{Rng, RNG_MAX_REQUEST};
