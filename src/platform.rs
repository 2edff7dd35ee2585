// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The legacy PC platform wired to a KVM VM: its devices, its buses and the vCPUs'
//! I/O handler on them. [`BootedMachine::run_on`](crate::BootedMachine::run_on) runs
//! it on the I/O thread.
//!
//! This is where `kvmkit-devices` (which knows no KVM) meets `kvmkit-vcpu` (which
//! knows no devices): [`PlatformIo`] implements the vCPU's [`IoHandler`] on the
//! device buses, and the serial interrupt's event fd becomes a KVM irqfd.

use std::sync::Arc;

use kvmkit_devices::{event_fd, ConsoleInput, ConsoleOutput, EventSources, Flow};
use kvmkit_devices::{
    AcpiSleepControl, AddressSpace, BootTimer, Bus, CmosRtc, DebugExit, EventFdInterrupt,
    EventLoop, GedEvent, GenericEventDevice, PvPanic, ResetControl, SerialOutput, SerialPort,
    UartState, VmShutdown, ACPI_SLEEP_CONTROL_LEN, ACPI_SLEEP_CONTROL_PORT,
    ACPI_SLEEP_STATUS_OFFSET, CMOS_PORT, CMOS_PORT_LEN, COM1_IRQ, COM1_PORT, DEBUG_EXIT_PORT,
    DEBUG_EXIT_PORT_LEN, GED_IRQ, GED_PORT, GED_PORT_LEN, I8042, I8042_COMMAND_PORT,
    I8042_DATA_PORT, I8042_PULSE_RESET, PVPANIC_PORT, PVPANIC_PORT_LEN, RESET_CONTROL_PORT,
    RESET_CONTROL_PORT_LEN, SERIAL_PORT_LEN,
};
use kvmkit_memory::x86::BOOT_TIMER;
use kvmkit_vcpu::{IoAction, IoHandler, Vm};
use kvmkit_virtio::{
    Console, EventFdVirtioInterrupt, GuestMemory, MmioTransport, NoShortcut, QueueNotifiers,
    TransportState, VirtioDevice, MMIO_WINDOW,
};

use crate::control::{ControlEnd, VmControl};
use crate::seccomp::SeccompPolicy;
use crate::timeline::Timeline;
use crate::virtio_mmio::{VirtioMmioDevice, VmNotifiers};
use crate::{Error, NotifyPath, PlatformDevices, VirtioMmioSlot, VIRTIO_IRQS, VIRTIO_MMIO_BASE};

/// The Generic Event Device, its interrupt routed to `vm`'s GED_IRQ through an irqfd.
fn generic_event_device(vm: &Vm) -> Result<Arc<GenericEventDevice>, Error> {
    let interrupt =
        Arc::new(EventFdInterrupt::new().map_err(Error::host("cannot create an eventfd"))?);
    vm.register_irqfd(interrupt.event(), GED_IRQ)?;
    Ok(Arc::new(GenericEventDevice::new(interrupt)))
}

/// The I/O handler of every vCPU: port and MMIO accesses go to the buses; once a
/// device has asked the VM to end, the vCPU stops instead of re-entering the guest.
#[derive(Debug, Clone)]
pub struct PlatformIo {
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    exit: Arc<VmShutdown>,
}

impl PlatformIo {
    /// A handler on these buses that stops a vCPU once `exit` is requested. A
    /// [`Platform`] makes one with [`Platform::io_handler`]; this is for buses
    /// assembled by hand.
    pub fn new(pio: Arc<Bus>, mmio: Arc<Bus>, exit: Arc<VmShutdown>) -> Self {
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

/// Which console the VMM's standard input feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StdinConsole {
    /// None: stdin is not read.
    #[default]
    None,
    /// COM1 (`ttyS0`).
    Serial,
    /// The virtio console (`hvc0`); the run fails with
    /// [`Error::NoVirtioConsole`] if none was added.
    Virtio,
}

/// Where the platform's console is connected, and which extras it has.
///
/// The default suits a library: COM1's output on stdout (written without blocking),
/// nothing read from stdin, no signal handling, no raw terminal and no debug exit port
/// the guest could end the VMM with. [`interactive`](Self::interactive) is what a
/// VMM's command line wants.
#[non_exhaustive]
pub struct PlatformConfig {
    /// Where COM1's output goes.
    pub serial_output: SerialOutput,
    /// The console the VMM's stdin feeds: a terminal is put in raw mode, where every
    /// key goes to the guest but the escape, Ctrl-A x, which ends the VM (see
    /// [`EventLoop::add_terminal_input`]).
    pub stdin: StdinConsole,
    /// Turn SIGINT, SIGTERM, SIGHUP and SIGQUIT into an orderly stop
    /// ([`VmOutcome::Signal`](crate::VmOutcome::Signal)) and SIGTSTP into a suspend with the terminal restored.
    /// Only for the VMM's main thread: it blocks them there and in the vCPU threads.
    pub handle_signals: bool,
    /// Put the debug exit device at this port.
    pub debug_exit_port: Option<u16>,
    /// Confine the vCPU threads and the I/O thread with seccomp filters (see
    /// [`seccomp`](crate::seccomp)). A filter cannot be lifted: the thread that calls
    /// [`run_on`](crate::BootedMachine::run_on) keeps the I/O thread's after it
    /// returns, so give the VM a thread that does little else afterwards (the runner's
    /// main thread prints its report and exits).
    pub seccomp: SeccompPolicy,
}

impl Default for PlatformConfig {
    /// Console output on stdout; no input, signals or debug exit.
    fn default() -> Self {
        PlatformConfig {
            serial_output: SerialOutput::Stdout,
            stdin: StdinConsole::None,
            handle_signals: false,
            debug_exit_port: None,
            seccomp: SeccompPolicy::Off,
        }
    }
}

impl PlatformConfig {
    /// A console on the VMM's terminal: stdin to COM1 in raw mode, COM1 to stdout,
    /// signals handled, and the debug exit port at 0xf4.
    pub fn interactive() -> Self {
        PlatformConfig {
            serial_output: SerialOutput::Stdout,
            stdin: StdinConsole::Serial,
            handle_signals: true,
            debug_exit_port: Some(port(DEBUG_EXIT_PORT)),
            seccomp: SeccompPolicy::Off,
        }
    }

    /// This configuration with its threads confined by `policy`.
    pub fn with_seccomp(mut self, policy: SeccompPolicy) -> Self {
        self.seccomp = policy;
        self
    }

    /// This configuration with COM1's output going to `output`.
    pub fn with_serial_output(mut self, output: SerialOutput) -> Self {
        self.serial_output = output;
        self
    }

    /// This configuration with the debug exit device at `port`, or without it.
    pub fn with_debug_exit_port(mut self, port: Option<u16>) -> Self {
        self.debug_exit_port = port;
        self
    }
}

/// The legacy devices of a minimal PC: COM1 (IRQ 4 through an irqfd), the i8042 reset
/// line, the reset control register (0xcf9), the CMOS RTC, the ACPI sleep control
/// register (power-off), the pvpanic port (a guest's panic report), the ACPI Generic
/// Event Device and, optionally, a debug exit port, on a port bus; Firecracker's boot
/// timer on an MMIO bus. The VMM can add devices to both.
pub struct Platform {
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    exit: Arc<VmShutdown>,
    serial: Arc<SerialPort>,
    config: PlatformConfig,
    // Registered with KVM as the irqfd of COM1_IRQ; kept alive with the platform.
    _serial_interrupt: Arc<EventFdInterrupt>,
    /// ACPI events (the power button, a new VM generation), on GED_IRQ.
    generic_events: Arc<GenericEventDevice>,
    /// Firecracker's boot timer, at `x86::BOOT_TIMER`.
    boot_timer: Arc<BootTimer>,
    vm: Arc<Vm>,
    /// Taken by the run loop, which makes the calling thread the I/O thread.
    event_loop: Option<EventLoop>,
    virtio: Vec<VirtioMmioDevice>,
    /// The virtio console's input, which takes stdin instead of COM1.
    console_input: Option<Arc<dyn ConsoleInput>>,
    /// Console outputs besides COM1's, flushed once more when the VM ends.
    console_outputs: Vec<Arc<ConsoleOutput>>,
    /// The I/O thread's end of the VM's control handles, once one was asked for.
    control: Option<(VmControl, ControlEnd)>,
}

impl Platform {
    /// Creates the devices and connects COM1's interrupt to `vm`'s in-kernel irqchip.
    pub fn new(vm: &Arc<Vm>, mut config: PlatformConfig) -> Result<Self, Error> {
        let exit = Arc::new(VmShutdown::new().map_err(Error::host("cannot create an eventfd"))?);
        let interrupt =
            Arc::new(EventFdInterrupt::new().map_err(Error::host("cannot create an eventfd"))?);
        vm.register_irqfd(interrupt.event(), COM1_IRQ)?;
        let output = std::mem::replace(&mut config.serial_output, SerialOutput::Sink);
        let serial = Arc::new(
            SerialPort::new(interrupt.clone(), output)
                .map_err(Error::host("cannot open the serial output"))?,
        );
        let pio = Arc::new(Bus::new(AddressSpace::Pio));
        pio.insert(COM1_PORT, SERIAL_PORT_LEN, "com1", serial.clone())?;
        let i8042 = Arc::new(I8042::new(exit.clone()));
        pio.insert(I8042_DATA_PORT, 5, "i8042", i8042)?;
        let reset_control = Arc::new(ResetControl::new(exit.clone()));
        pio.insert(
            RESET_CONTROL_PORT,
            RESET_CONTROL_PORT_LEN,
            "reset-control",
            reset_control,
        )?;
        let pvpanic = Arc::new(PvPanic::new(exit.clone()));
        pio.insert(PVPANIC_PORT, PVPANIC_PORT_LEN, "pvpanic", pvpanic)?;
        let rtc = Arc::new(CmosRtc::new());
        pio.insert(CMOS_PORT, CMOS_PORT_LEN, "cmos-rtc", rtc)?;
        let generic_events = generic_event_device(vm)?;
        pio.insert(GED_PORT, GED_PORT_LEN, "acpi-ged", generic_events.clone())?;
        let sleep_control = Arc::new(AcpiSleepControl::new(exit.clone()));
        pio.insert(
            ACPI_SLEEP_CONTROL_PORT,
            ACPI_SLEEP_CONTROL_LEN,
            "acpi-sleep-control",
            sleep_control,
        )?;
        if let Some(port) = config.debug_exit_port {
            let device = Arc::new(DebugExit::new(exit.clone()));
            pio.insert(u64::from(port), DEBUG_EXIT_PORT_LEN, "debug-exit", device)?;
        }
        let event_loop =
            EventLoop::new(exit.clone()).map_err(Error::host("cannot create the event loop"))?;
        let mmio = Arc::new(Bus::new(AddressSpace::Mmio));
        let boot_timer = Arc::new(BootTimer::new());
        mmio.insert(
            BOOT_TIMER.start,
            BOOT_TIMER.size,
            "boot-timer",
            boot_timer.clone(),
        )?;
        Ok(Platform {
            pio,
            mmio,
            exit,
            serial,
            config,
            _serial_interrupt: interrupt,
            generic_events,
            boot_timer,
            vm: Arc::clone(vm),
            event_loop: Some(event_loop),
            virtio: Vec::new(),
            console_input: None,
            console_outputs: Vec::new(),
            control: None,
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
    pub fn exit(&self) -> &Arc<VmShutdown> {
        &self.exit
    }

    /// The Generic Event Device, to press the guest's power button
    /// ([`GedEvent::PowerButton`]) from any thread.
    pub fn generic_events(&self) -> &Arc<GenericEventDevice> {
        &self.generic_events
    }

    /// The legacy devices every platform has, as a guest's ACPI tables describe them:
    /// Firecracker's boot timer (at [`BOOT_TIMER`]): when the guest said its boot was
    /// complete.
    pub fn boot_timer(&self) -> &Arc<BootTimer> {
        &self.boot_timer
    }

    /// Points `timeline` at this platform's consoles (their first byte) and its boot
    /// timer (the guest's "boot complete").
    pub(crate) fn watch_on(&self, timeline: &Timeline) {
        timeline.watch_consoles(
            std::iter::once(self.serial.output())
                .chain(self.console_outputs())
                .cloned(),
        );
        timeline.watch_boot_timer(Arc::clone(&self.boot_timer));
    }

    /// COM1, the sleep control and status registers, the i8042's reset and pvpanic.
    pub fn legacy_devices() -> kvmkit_boot::LegacyDevices {
        kvmkit_boot::LegacyDevices {
            serial: Some((port(COM1_PORT), COM1_IRQ)),
            sleep_control_port: port(ACPI_SLEEP_CONTROL_PORT),
            sleep_status_port: port(ACPI_SLEEP_CONTROL_PORT + ACPI_SLEEP_STATUS_OFFSET),
            reset: (port(I8042_COMMAND_PORT), I8042_PULSE_RESET),
            pvpanic_port: Some(port(PVPANIC_PORT)),
            vm_generation_id: Some(kvmkit_memory::x86::VM_GENERATION_ID.start),
            generic_events: Some((port(GED_PORT), GED_IRQ)),
        }
    }

    /// The vCPUs' I/O handler on this platform's buses.
    pub fn io_handler(&self) -> PlatformIo {
        PlatformIo::new(self.pio.clone(), self.mmio.clone(), self.exit.clone())
    }

    /// Adds a virtio-mmio device, its queue notifications through KVM ioeventfds.
    /// See [`add_virtio_mmio_with`](Self::add_virtio_mmio_with).
    pub fn add_virtio_mmio(
        &mut self,
        device: Box<dyn VirtioDevice>,
        memory: &Arc<GuestMemory>,
    ) -> Result<VirtioMmioSlot, Error> {
        self.add_virtio_mmio_with(device, memory, NotifyPath::Ioeventfd)
    }

    /// Adds a virtio-mmio device on `memory`: picks the next MMIO window (from
    /// [`VIRTIO_MMIO_BASE`], [`MMIO_WINDOW`] bytes each) and interrupt line, connects
    /// the interrupt as a KVM irqfd, and has the device served on this platform's I/O
    /// thread. Queue notifications take `path`. Returns where the device sits, which
    /// is what a guest must be told (see [`VirtioMmioSlot::kernel_parameter`]).
    pub fn add_virtio_mmio_with(
        &mut self,
        device: Box<dyn VirtioDevice>,
        memory: &Arc<GuestMemory>,
        path: NotifyPath,
    ) -> Result<VirtioMmioSlot, Error> {
        let index = self.virtio.len();
        let irq = *VIRTIO_IRQS.get(index).ok_or(Error::TooManyVirtioDevices {
            max: VIRTIO_IRQS.len(),
        })?;
        let events: Arc<dyn EventSources> = Arc::new(
            self.event_loop
                .as_ref()
                .ok_or(Error::PlatformRunning)?
                .handle(),
        );
        let slot = VirtioMmioSlot {
            base: VIRTIO_MMIO_BASE + index as u64 * MMIO_WINDOW,
            size: MMIO_WINDOW,
            irq,
            device_type: device.device_type(),
        };
        let interrupt = Arc::new(
            EventFdVirtioInterrupt::new().map_err(Error::host("cannot create an eventfd"))?,
        );
        self.vm.register_irqfd(interrupt.event(), irq)?;
        let shortcut: Arc<dyn QueueNotifiers> = match path {
            NotifyPath::Ioeventfd => Arc::new(VmNotifiers(Arc::clone(&self.vm))),
            NotifyPath::MmioExit => Arc::new(NoShortcut),
        };
        let transport = Arc::new(MmioTransport::new(
            device,
            slot.base,
            Arc::clone(memory),
            interrupt.clone(),
            events,
            shortcut,
        ));
        self.mmio
            .insert(slot.base, slot.size, "virtio-mmio", transport.clone())?;
        self.virtio.push(VirtioMmioDevice {
            slot,
            transport,
            _interrupt: interrupt,
        });
        Ok(slot)
    }

    /// Adds a virtio console (`/dev/hvc0` in a Linux guest) writing to `output`; it
    /// takes the VMM's stdin when the configuration says [`StdinConsole::Virtio`].
    pub fn add_virtio_console(
        &mut self,
        output: SerialOutput,
        memory: &Arc<GuestMemory>,
    ) -> Result<VirtioMmioSlot, Error> {
        let output = Arc::new(
            ConsoleOutput::new(output).map_err(Error::host("cannot open the console output"))?,
        );
        let console =
            Console::new(Arc::clone(&output)).map_err(Error::host("cannot create an eventfd"))?;
        let input = console.input();
        let slot = self.add_virtio_mmio(Box::new(console), memory)?;
        self.event_loop
            .as_mut()
            .ok_or(Error::PlatformRunning)?
            .add_console_output(Arc::clone(&output))
            .map_err(Error::host("cannot watch the console output"))?;
        self.console_outputs.push(output);
        self.console_input = Some(input);
        Ok(slot)
    }

    /// The virtio console's input, once one is added (what a test or a VMM feeds
    /// other input to).
    pub fn console_input(&self) -> Option<Arc<dyn ConsoleInput>> {
        self.console_input.clone()
    }

    /// Every device a booting guest is told about: the virtio-mmio devices added so
    /// far and the legacy devices (what [`Machine::boot_on`](crate::Machine::boot_on)
    /// takes).
    pub fn devices(&self) -> PlatformDevices {
        PlatformDevices {
            virtio: self.virtio_devices(),
            legacy: Self::legacy_devices(),
        }
    }

    /// The virtio-mmio devices added so far, in order.
    pub fn virtio_devices(&self) -> Vec<VirtioMmioSlot> {
        self.virtio.iter().map(|device| device.slot).collect()
    }

    /// A handle that pauses and resumes the VM from another thread while
    /// [`run_on`](crate::BootedMachine::run_on) runs it on this platform (see
    /// [`control`](crate::control)); the same one each time.
    pub fn control(&mut self) -> Result<VmControl, Error> {
        if let Some((control, _)) = &self.control {
            return Ok(control.clone());
        }
        let (control, end) = ControlEnd::new().map_err(Error::host("cannot create an eventfd"))?;
        self.event_loop
            .as_mut()
            .ok_or(Error::PlatformRunning)?
            // Leave the loop: the run serves the request (and consumes the event) with
            // the machine at hand.
            .add(event_fd(end.wake()), || Flow::Stop)
            .map_err(Error::host("cannot watch the control requests"))?;
        self.control = Some((control.clone(), end));
        Ok(control)
    }

    /// The I/O thread's end of the control handles, if one was made.
    pub(crate) fn control_end(&self) -> Option<&ControlEnd> {
        self.control.as_ref().map(|(_, end)| end)
    }

    /// What a snapshot saves of the platform's devices: COM1's state and each virtio
    /// transport's (the devices paused, as a paused VM's are).
    pub(crate) fn devices_state(&self) -> (UartState, Vec<TransportState>) {
        let virtio = self
            .virtio
            .iter()
            .map(|device| device.transport.save_state())
            .collect();
        (self.serial.save_state(), virtio)
    }

    /// Puts the devices' state from `snapshot` back: COM1's registers and FIFO, and
    /// each virtio device (of the saved type, in the same slot), started again as its
    /// driver had started it; and tells the guest its VM generation changed (the
    /// machine's restore wrote a new ID), which it sees once it runs.
    pub fn restore_devices(&self, snapshot: &crate::Snapshot) -> Result<(), Error> {
        let here: Vec<u32> = self.virtio.iter().map(|d| d.slot.device_type).collect();
        let saved: Vec<u32> = snapshot.virtio().iter().map(|s| s.device_type()).collect();
        if here != saved {
            return Err(crate::SnapshotError::Mismatch {
                what: "virtio devices",
                saved: format!("{saved:?}"),
                here: format!("{here:?}"),
            }
            .into());
        }
        self.serial
            .restore_state(snapshot.serial())
            .map_err(crate::SnapshotError::Serial)?;
        for (slot, (device, state)) in self.virtio.iter().zip(snapshot.virtio()).enumerate() {
            device
                .transport
                .restore_state(state)
                .map_err(|source| crate::SnapshotError::Device { slot, source })?;
        }
        self.generic_events
            .notify(GedEvent::VmGeneration)
            .map_err(Error::host(
                "cannot raise the Generic Event Device's interrupt",
            ))
    }

    /// Pauses every virtio device's queue work and returns once none runs
    /// ([`MmioTransport::pause`]): the second half of a VM's pause, after its vCPUs
    /// ([`RunningMachine::pause`](crate::RunningMachine::pause)). The legacy devices
    /// need none: they act only when a vCPU touches them (COM1 also takes host input,
    /// into its FIFO).
    pub fn pause_devices(&self) {
        for device in &self.virtio {
            device.transport.pause();
        }
    }

    /// Resumes every virtio device; what their drivers posted meanwhile is served.
    /// Resume the devices before the vCPUs.
    pub fn resume_devices(&self) {
        for device in &self.virtio {
            device.transport.resume();
        }
    }

    /// Resets every virtio device ([`MmioTransport::reset_device`]) and drops the
    /// ACPI events the guest has not read: what a reboot in place does to them.
    pub fn reset_devices(&self) {
        for device in &self.virtio {
            device.transport.reset_device();
        }
        self.generic_events.clear();
    }

    /// The transport of virtio-mmio device `index`, for its counters.
    pub fn virtio_transport(&self, index: usize) -> Option<&Arc<MmioTransport>> {
        self.virtio.get(index).map(|device| &device.transport)
    }

    /// Its configuration, for the run loop.
    pub(crate) fn config(&self) -> &PlatformConfig {
        &self.config
    }

    /// Hands the event loop to the thread that will run it (once).
    pub(crate) fn take_event_loop(&mut self) -> Result<EventLoop, Error> {
        self.event_loop.take().ok_or(Error::PlatformRunning)
    }

    /// The console that takes the VMM's stdin, as configured; `None` for none.
    pub(crate) fn stdin_console(&self) -> Result<Option<Arc<dyn ConsoleInput>>, Error> {
        match self.config.stdin {
            StdinConsole::None => Ok(None),
            StdinConsole::Serial => Ok(Some(self.serial.clone())),
            StdinConsole::Virtio => self
                .console_input
                .clone()
                .map(Some)
                .ok_or(Error::NoVirtioConsole),
        }
    }

    /// Every console output, COM1's first: flushed once more when the VM ends.
    pub(crate) fn console_outputs(&self) -> impl Iterator<Item = &Arc<ConsoleOutput>> {
        std::iter::once(self.serial.output()).chain(&self.console_outputs)
    }
}

/// A port of the devices crate (an address on its port bus) as the 16-bit port the
/// guest's tables name.
// The assertion makes the cast exact; for the constants it runs at compile time.
#[allow(clippy::cast_possible_truncation)]
const fn port(addr: u64) -> u16 {
    assert!(addr <= 0xffff, "not an x86 I/O port");
    addr as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_crates_default_legacy_devices_are_where_the_platform_puts_them() {
        assert_eq!(
            Platform::legacy_devices(),
            kvmkit_boot::LegacyDevices::default()
        );
    }
}
