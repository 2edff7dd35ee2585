// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

#![deny(missing_docs)]
//! The emulated platform of a minimal PC-like VM, and the thread that runs it.
//!
//! - [`Bus`]: a port or MMIO address space routing each access to the [`BusDevice`]
//!   registered for its range (logarithmic lookup, overlaps refused, unmapped
//!   accesses counted and read as all-ones, no global lock on the access path).
//! - Devices: `SerialPort` (16550A on vm-superio, feature `uart`, on by default),
//!   [`I8042`] (reset),
//!   [`CmosRtc`] (host wall clock, BCD or binary), [`AcpiSleepControl`] (power-off),
//!   [`GenericEventDevice`] (ACPI events: the power button, a new VM generation),
//!   [`DebugExit`] (exit codes for test guests), [`BootTimer`] (Firecracker's: the
//!   guest says when its boot is complete).
//! - [`Interrupt`]: how a device raises its line; [`EventFdInterrupt`] is an event
//!   fd a VMM registers with its hypervisor (as a KVM irqfd, say).
//! - [`VmShutdown`]: the one-shot "shut the VM down" request devices and signals
//!   raise.
//! - [`EventLoop`]: the I/O thread's epoll loop (console input, SIGINT/SIGTERM,
//!   device event fds), with [`RawTerminal`] for a console on a tty.
//!
//! Nothing here depends on KVM: a VMM connects the buses to its vCPUs' I/O exits.
//!
//! ```
//! use std::sync::Arc;
//! use kvmkit_devices::{AddressSpace, Bus, CmosRtc, CMOS_PORT, CMOS_PORT_LEN};
//!
//! let ports = Bus::new(AddressSpace::Pio);
//! ports.insert(CMOS_PORT, CMOS_PORT_LEN, "rtc", Arc::new(CmosRtc::new())).unwrap();
//! ports.write(0x70, &[0x0d]); // select status register D
//! let mut data = [0u8];
//! ports.read(0x71, &mut data);
//! assert_eq!(data[0], 0x80); // "CMOS valid"
//! ```

mod acpi;
mod boot_timer;
mod bus;
mod console;
mod console_io;
mod debug_exit;
mod event_loop;
mod ged;
mod i8042;
mod interrupt;
mod pvpanic;
mod readiness;
mod reset_control;
mod rtc;
#[cfg(feature = "uart")]
mod serial;
mod shutdown;
mod signals;
mod terminal;

pub use acpi::{
    AcpiSleepControl, ACPI_SLEEP_CONTROL_LEN, ACPI_SLEEP_CONTROL_PORT, ACPI_SLEEP_STATUS_OFFSET,
    S5_SLEEP_TYPE,
};
pub use boot_timer::{BootTimer, BOOT_COMPLETE, BOOT_TIMER_LEN};
pub use bus::{reply_byte, AddressSpace, Bus, BusDevice, BusError};
#[cfg(feature = "test-utils")]
pub use console::SharedBuffer;
pub use console::{ConsoleInput, ConsoleOutput, FlushState, SerialOutput, OUTPUT_QUEUE_BYTES};
pub use console_io::ESCAPE;
pub use debug_exit::{DebugExit, DEBUG_EXIT_PORT, DEBUG_EXIT_PORT_LEN};
pub use event_loop::{event_fd, EventLoop, EventSources, Flow, Handler, LoopEnd, LoopHandle};
pub use ged::{GedEvent, GenericEventDevice, GED_IRQ, GED_PORT, GED_PORT_LEN};
pub use i8042::{I8042, I8042_COMMAND_PORT, I8042_DATA_PORT, I8042_PULSE_RESET};
pub use interrupt::{EventFdInterrupt, Interrupt};
pub use pvpanic::{
    PvPanic, PVPANIC_CRASH_LOADED, PVPANIC_PANICKED, PVPANIC_PORT, PVPANIC_PORT_LEN,
};
pub use readiness::{wait_readable, wait_writable};
pub use reset_control::{ResetControl, RESET_CONTROL_PORT, RESET_CONTROL_PORT_LEN, RESET_CPU};
pub use rtc::{Clock, CmosRtc, DateTime, CMOS_PORT, CMOS_PORT_LEN};
#[cfg(feature = "uart")]
pub use serial::{SerialPort, UartState, COM1_IRQ, COM1_PORT, SERIAL_PORT_LEN};
pub use shutdown::{ShutdownReason, VmShutdown};
pub use signals::{TerminationSignals, TERMINATION_SIGNALS};
pub use terminal::RawTerminal;
