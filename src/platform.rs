// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The legacy PC platform wired to a KVM VM, and the I/O thread that runs it.
//!
//! This is where `kvmkit-devices` (which knows no KVM) meets `kvmkit-vcpu` (which
//! knows no devices): [`PlatformIo`] implements the vCPU's [`IoHandler`] on the
//! device buses, and the serial interrupt's event fd becomes a KVM irqfd.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use kvmkit_devices::{
    AcpiSleepControl, AddressSpace, Bus, CmosRtc, DebugExit, EventFdInterrupt, EventLoop,
    ExitRequest, Flow, SerialOutput, SerialPort, TerminationSignals, VmExit,
    ACPI_SLEEP_CONTROL_LEN, ACPI_SLEEP_CONTROL_PORT, CMOS_PORT, CMOS_PORT_LEN, COM1_IRQ, COM1_PORT,
    DEBUG_EXIT_PORT, DEBUG_EXIT_PORT_LEN, I8042, I8042_DATA_PORT, SERIAL_PORT_LEN,
};
use kvmkit_devices::{LoopEnd, RawTerminal};
use kvmkit_vcpu::{EventFd, IoAction, IoHandler, SystemEventKind, VcpuExit, VcpuOutcome, Vm};

use crate::{BootedMachine, Error};

/// The I/O handler of every vCPU: port and MMIO accesses go to the buses; once a
/// device has asked the VM to end, the vCPU stops instead of re-entering the guest.
#[derive(Debug, Clone)]
pub struct PlatformIo {
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    exit: Arc<VmExit>,
}

impl PlatformIo {
    /// A handler on these buses that stops a vCPU once `exit` is requested. A
    /// [`Platform`] makes one with [`Platform::io_handler`]; this is for buses
    /// assembled by hand.
    pub fn new(pio: Arc<Bus>, mmio: Arc<Bus>, exit: Arc<VmExit>) -> Self {
        PlatformIo { pio, mmio, exit }
    }

    /// The port bus.
    pub fn pio_bus(&self) -> &Arc<Bus> {
        &self.pio
    }

    /// The MMIO bus.
    pub fn mmio_bus(&self) -> &Arc<Bus> {
        &self.mmio
    }

    #[inline]
    fn after_write(&self) -> IoAction {
        if self.exit.is_requested() {
            IoAction::Stop
        } else {
            IoAction::Continue
        }
    }
}

impl IoHandler for PlatformIo {
    fn pio_read(&self, port: u16, data: &mut [u8]) -> IoAction {
        self.pio.read(u64::from(port), data);
        IoAction::Continue
    }

    fn pio_write(&self, port: u16, data: &[u8]) -> IoAction {
        self.pio.write(u64::from(port), data);
        self.after_write()
    }

    fn mmio_read(&self, addr: u64, data: &mut [u8]) -> IoAction {
        self.mmio.read(addr, data);
        IoAction::Continue
    }

    fn mmio_write(&self, addr: u64, data: &[u8]) -> IoAction {
        self.mmio.write(addr, data);
        self.after_write()
    }
}

/// Where the platform's console is connected, and which extras it has.
pub struct PlatformConfig {
    /// Where COM1's output goes.
    pub serial_output: SerialOutput,
    /// Feed the VMM's stdin to COM1 (in raw mode when it is a terminal).
    pub stdin_to_serial: bool,
    /// Turn SIGINT and SIGTERM into an orderly stop ([`VmOutcome::Signal`]). Only
    /// for the VMM's main thread: it blocks them there and in the vCPU threads.
    pub handle_signals: bool,
    /// Put the debug exit device at this port.
    pub debug_exit_port: Option<u16>,
}

impl Default for PlatformConfig {
    /// Console on stdout and stdin, signals handled, debug exit at 0xf4.
    fn default() -> Self {
        PlatformConfig {
            serial_output: SerialOutput::Stdout,
            stdin_to_serial: true,
            handle_signals: true,
            debug_exit_port: Some(DEBUG_EXIT_PORT as u16),
        }
    }
}

/// The legacy devices of a minimal PC: COM1 (IRQ 4 through an irqfd), the i8042 reset
/// line, the CMOS RTC, the ACPI sleep control register (power-off) and, optionally, a
/// debug exit port; on a port bus and an (empty)
/// MMIO bus that the VMM can add devices to.
pub struct Platform {
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    exit: Arc<VmExit>,
    serial: Arc<SerialPort>,
    config: PlatformConfig,
    // Registered with KVM as the irqfd of COM1_IRQ; kept alive with the platform.
    _serial_interrupt: Arc<EventFdInterrupt>,
}

fn io_error(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::Config(format!("{what}: {e}"))
}

impl Platform {
    /// Creates the devices and connects COM1's interrupt to `vm`'s in-kernel irqchip.
    pub fn new(vm: &Vm, mut config: PlatformConfig) -> Result<Self, Error> {
        let exit = Arc::new(VmExit::new().map_err(io_error("cannot create the exit event"))?);
        let interrupt =
            Arc::new(EventFdInterrupt::new().map_err(io_error("cannot create an eventfd"))?);
        vm.register_irqfd(interrupt.event(), COM1_IRQ)?;
        let output = std::mem::replace(&mut config.serial_output, SerialOutput::Sink);
        let serial = Arc::new(SerialPort::new(interrupt.clone(), output));
        let pio = Arc::new(Bus::new(AddressSpace::Pio));
        let bus_error = |e: kvmkit_devices::BusError| Error::Config(e.to_string());
        pio.insert(COM1_PORT, SERIAL_PORT_LEN, "com1", serial.clone())
            .map_err(bus_error)?;
        pio.insert(
            I8042_DATA_PORT,
            5,
            "i8042",
            Arc::new(I8042::new(exit.clone())),
        )
        .map_err(bus_error)?;
        pio.insert(
            CMOS_PORT,
            CMOS_PORT_LEN,
            "cmos-rtc",
            Arc::new(CmosRtc::new()),
        )
        .map_err(bus_error)?;
        let sleep_control = Arc::new(AcpiSleepControl::new(exit.clone()));
        pio.insert(
            ACPI_SLEEP_CONTROL_PORT,
            ACPI_SLEEP_CONTROL_LEN,
            "acpi-sleep-control",
            sleep_control,
        )
        .map_err(bus_error)?;
        if let Some(port) = config.debug_exit_port {
            let device = Arc::new(DebugExit::new(exit.clone()));
            pio.insert(u64::from(port), DEBUG_EXIT_PORT_LEN, "debug-exit", device)
                .map_err(bus_error)?;
        }
        Ok(Platform {
            pio,
            mmio: Arc::new(Bus::new(AddressSpace::Mmio)),
            exit,
            serial,
            config,
            _serial_interrupt: interrupt,
        })
    }

    /// The port bus, to add devices.
    pub fn pio(&self) -> &Arc<Bus> {
        &self.pio
    }

    /// The MMIO bus, to add devices.
    pub fn mmio(&self) -> &Arc<Bus> {
        &self.mmio
    }

    /// COM1, e.g. to feed it input.
    pub fn serial(&self) -> &Arc<SerialPort> {
        &self.serial
    }

    /// The VM's exit request, shared with the devices.
    pub fn exit(&self) -> &Arc<VmExit> {
        &self.exit
    }

    /// The vCPUs' I/O handler on this platform's buses.
    pub fn io_handler(&self) -> PlatformIo {
        PlatformIo::new(self.pio.clone(), self.mmio.clone(), self.exit.clone())
    }
}

/// How a VM run on a [`Platform`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmOutcome {
    /// The guest powered off (ACPI S5, or a KVM shutdown system event).
    PowerOff,
    /// The guest asked for a reset (i8042 or a KVM reset system event).
    Reboot,
    /// The guest wrote `code` to the debug exit port.
    DebugExit(u32),
    /// The VMM got this signal (SIGINT, SIGTERM).
    Signal(i32),
    /// A vCPU triple-faulted.
    TripleFault {
        /// The vCPU.
        vcpu: u32,
        /// Its instruction pointer.
        rip: u64,
    },
    /// A vCPU ended for another reason, e.g. `hlt` without an in-kernel APIC.
    VcpuExit {
        /// The vCPU.
        vcpu: u32,
        /// Its last exit.
        exit: VcpuExit,
    },
}

impl VmOutcome {
    /// A process exit status for this outcome: 0 for a power-off, the code for a
    /// debug exit, 128 + the signal for a signal, 1 otherwise.
    pub fn exit_status(&self) -> i32 {
        match self {
            VmOutcome::PowerOff | VmOutcome::Reboot => 0,
            VmOutcome::DebugExit(code) => *code as i32,
            VmOutcome::Signal(signo) => 128 + signo,
            VmOutcome::TripleFault { .. } | VmOutcome::VcpuExit { .. } => 1,
        }
    }
}

impl BootedMachine {
    /// Runs the machine on `platform`: one thread per vCPU and the calling thread as
    /// the I/O thread, until a device, a signal or a vCPU ends the VM. Then every vCPU
    /// is stopped and joined and the terminal restored, and one outcome returned.
    pub fn run_on(self, platform: Platform) -> Result<VmOutcome, Error> {
        let signals = if platform.config.handle_signals {
            Some(Arc::new(
                TerminationSignals::block().map_err(io_error("cannot block SIGINT/SIGTERM"))?,
            ))
        } else {
            None
        };
        let vcpu_ended = Arc::new(
            EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
                .map_err(io_error("cannot create an eventfd"))?,
        );
        let mut event_loop = EventLoop::new(platform.exit.clone())
            .map_err(io_error("cannot create the event loop"))?;
        if let Some(signals) = &signals {
            event_loop
                .add_termination_signals(signals.clone())
                .map_err(io_error("cannot watch for signals"))?;
        }
        let _terminal = if platform.config.stdin_to_serial {
            let stdin = std::io::stdin().as_raw_fd();
            event_loop
                .add_serial_input(stdin, platform.serial.clone())
                .map_err(io_error("cannot watch stdin"))?;
            RawTerminal::enable(stdin).map_err(io_error("cannot put the terminal in raw mode"))?
        } else {
            None
        };
        let ended = vcpu_ended.clone();
        event_loop
            .add(vcpu_ended.as_raw_fd(), move || {
                let _ = ended.read();
                Flow::Stop
            })
            .map_err(io_error("cannot watch the vCPU threads"))?;

        let running = self.start_notifying(Arc::new(platform.io_handler()), Some(vcpu_ended))?;
        let end = event_loop.run();
        running.stop();
        let outcomes = running.wait();
        let end = end.map_err(io_error("the event loop failed"))?;
        let outcomes = outcomes?;
        Ok(outcome(end, &outcomes))
    }
}

/// One outcome from the loop's end and the vCPUs' ends: a device's or signal's
/// request wins; then the first vCPU that ended by itself, in vCPU order.
fn outcome(end: LoopEnd, vcpus: &[VcpuOutcome]) -> VmOutcome {
    if let LoopEnd::Requested(request) = end {
        return match request {
            ExitRequest::Reboot => VmOutcome::Reboot,
            ExitRequest::PowerOff => VmOutcome::PowerOff,
            ExitRequest::DebugExit(code) => VmOutcome::DebugExit(code),
            ExitRequest::Signal(signo) => VmOutcome::Signal(signo),
        };
    }
    let ended = vcpus
        .iter()
        .enumerate()
        .find_map(|(id, outcome)| match outcome {
            VcpuOutcome::Exited(exit) => Some((id as u32, exit.clone())),
            VcpuOutcome::Stopped => None,
        });
    match ended {
        Some((vcpu, VcpuExit::Shutdown { rip })) => VmOutcome::TripleFault { vcpu, rip },
        Some((
            _,
            VcpuExit::SystemEvent {
                kind: SystemEventKind::Reset,
                ..
            },
        )) => VmOutcome::Reboot,
        Some((_, VcpuExit::SystemEvent { .. })) => VmOutcome::PowerOff,
        Some((vcpu, exit)) => VmOutcome::VcpuExit { vcpu, exit },
        // Every vCPU was stopped although nothing asked for it: report vCPU 0's state.
        None => VmOutcome::VcpuExit {
            vcpu: 0,
            exit: VcpuExit::Interrupted,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_request_wins_over_vcpu_ends() {
        let vcpus = [VcpuOutcome::Exited(VcpuExit::Shutdown { rip: 1 })];

        let result = outcome(LoopEnd::Requested(ExitRequest::DebugExit(7)), &vcpus);

        assert_eq!(result, VmOutcome::DebugExit(7));
    }

    #[test]
    fn a_triple_fault_names_the_vcpu_and_rip() {
        let vcpus = [
            VcpuOutcome::Stopped,
            VcpuOutcome::Exited(VcpuExit::Shutdown { rip: 0x1234 }),
        ];

        let result = outcome(LoopEnd::Stopped, &vcpus);

        assert_eq!(
            result,
            VmOutcome::TripleFault {
                vcpu: 1,
                rip: 0x1234
            }
        );
        assert_eq!(result.exit_status(), 1);
    }

    #[test]
    fn exit_status_of_a_signal_follows_the_shell_convention() {
        assert_eq!(VmOutcome::Signal(libc::SIGTERM).exit_status(), 143);
        assert_eq!(VmOutcome::DebugExit(3).exit_status(), 3);
    }
}
