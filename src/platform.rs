// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The legacy PC platform wired to a KVM VM, and the I/O thread that runs it.
//!
//! This is where `kvmkit-devices` (which knows no KVM) meets `kvmkit-vcpu` (which
//! knows no devices): [`PlatformIo`] implements the vCPU's [`IoHandler`] on the
//! device buses, and the serial interrupt's event fd becomes a KVM irqfd.

use std::os::fd::BorrowedFd;
use std::sync::Arc;

use kvmkit_devices::{event_fd, ConsoleInput, ConsoleOutput, LoopEnd, RawTerminal};
use kvmkit_devices::{
    AcpiSleepControl, AddressSpace, Bus, CmosRtc, DebugExit, EventFdInterrupt, EventLoop, Flow,
    SerialOutput, SerialPort, ShutdownReason, TerminationSignals, VmShutdown,
    ACPI_SLEEP_CONTROL_LEN, ACPI_SLEEP_CONTROL_PORT, ACPI_SLEEP_STATUS_OFFSET, CMOS_PORT,
    CMOS_PORT_LEN, COM1_IRQ, COM1_PORT, DEBUG_EXIT_PORT, DEBUG_EXIT_PORT_LEN, I8042,
    I8042_COMMAND_PORT, I8042_DATA_PORT, I8042_PULSE_RESET, SERIAL_PORT_LEN,
};
use kvmkit_vcpu::{EventFd, IoAction, IoHandler, SystemEventKind, VcpuExit, VcpuOutcome, Vm};
use kvmkit_virtio::{
    Console, EventFdVirtioInterrupt, GuestMemory, MmioTransport, NoShortcut, QueueNotifiers,
    VirtioDevice, MMIO_WINDOW,
};

use crate::virtio::{VirtioMmioDevice, VmNotifiers};
use crate::{BootedMachine, Error, NotifyPath, VirtioMmioSlot, VIRTIO_IRQS, VIRTIO_MMIO_BASE};

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
    /// Feed the VMM's stdin to the console (in raw mode when it is a terminal): COM1,
    /// or the virtio console once one is added.
    pub stdin_to_serial: bool,
    /// Turn SIGINT, SIGTERM, SIGHUP and SIGQUIT into an orderly stop
    /// ([`VmOutcome::Signal`]) and SIGTSTP into a suspend with the terminal restored.
    /// Only for the VMM's main thread: it blocks them there and in the vCPU threads.
    pub handle_signals: bool,
    /// Put the debug exit device at this port.
    pub debug_exit_port: Option<u16>,
}

impl Default for PlatformConfig {
    /// Console output on stdout; no input, signals or debug exit.
    fn default() -> Self {
        PlatformConfig {
            serial_output: SerialOutput::Stdout,
            stdin_to_serial: false,
            handle_signals: false,
            debug_exit_port: None,
        }
    }
}

impl PlatformConfig {
    /// A console on the VMM's terminal: stdin to COM1 in raw mode, COM1 to stdout,
    /// signals handled, and the debug exit port at 0xf4.
    pub fn interactive() -> Self {
        PlatformConfig {
            serial_output: SerialOutput::Stdout,
            stdin_to_serial: true,
            handle_signals: true,
            debug_exit_port: Some(DEBUG_EXIT_PORT as u16),
        }
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
/// line, the CMOS RTC, the ACPI sleep control register (power-off) and, optionally, a
/// debug exit port; on a port bus and an (empty)
/// MMIO bus that the VMM can add devices to.
pub struct Platform {
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    exit: Arc<VmShutdown>,
    serial: Arc<SerialPort>,
    config: PlatformConfig,
    // Registered with KVM as the irqfd of COM1_IRQ; kept alive with the platform.
    _serial_interrupt: Arc<EventFdInterrupt>,
    vm: Arc<Vm>,
    /// Taken by `run_on`, which makes the calling thread the I/O thread.
    event_loop: Option<EventLoop>,
    virtio: Vec<VirtioMmioDevice>,
    /// The virtio console's input, which takes stdin instead of COM1.
    console_input: Option<Arc<dyn ConsoleInput>>,
    /// Console outputs besides COM1's, flushed once more when the VM ends.
    console_outputs: Vec<Arc<ConsoleOutput>>,
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
        let rtc = Arc::new(CmosRtc::new());
        pio.insert(CMOS_PORT, CMOS_PORT_LEN, "cmos-rtc", rtc)?;
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
        Ok(Platform {
            pio,
            mmio: Arc::new(Bus::new(AddressSpace::Mmio)),
            exit,
            serial,
            config,
            _serial_interrupt: interrupt,
            vm: Arc::clone(vm),
            event_loop: Some(event_loop),
            virtio: Vec::new(),
            console_input: None,
            console_outputs: Vec::new(),
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

    /// The legacy devices every platform has, as a guest's ACPI tables describe them
    /// (`LinuxBoot::legacy_devices`): COM1, the sleep control and status registers
    /// and the i8042's reset.
    pub fn legacy_devices() -> kvmkit_boot::LegacyDevices {
        kvmkit_boot::LegacyDevices {
            serial: Some((COM1_PORT as u16, COM1_IRQ)),
            sleep_control_port: ACPI_SLEEP_CONTROL_PORT as u16,
            sleep_status_port: (ACPI_SLEEP_CONTROL_PORT + ACPI_SLEEP_STATUS_OFFSET) as u16,
            reset: (I8042_COMMAND_PORT as u16, I8042_PULSE_RESET),
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
        let irq = *VIRTIO_IRQS.get(index).ok_or_else(|| {
            Error::Config(format!(
                "at most {} virtio-mmio devices: every interrupt line for them is taken",
                VIRTIO_IRQS.len()
            ))
        })?;
        let events = self
            .event_loop
            .as_ref()
            .ok_or_else(|| Error::Config("the platform is running already".into()))?
            .handle();
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
    /// takes the VMM's stdin instead of COM1 when the configuration feeds stdin to the
    /// console.
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
            .ok_or_else(|| Error::Config("the platform is running already".into()))?
            .add_console_output(Arc::clone(&output))
            .map_err(Error::host("cannot watch the console output"))?;
        self.console_outputs.push(output);
        self.console_input = Some(input);
        Ok(slot)
    }

    /// The input of the console that takes the VMM's stdin: the virtio console's once
    /// one is added (what a test or a VMM feeds other input to).
    pub fn console_input(&self) -> Option<Arc<dyn ConsoleInput>> {
        self.console_input.clone()
    }

    /// The virtio-mmio devices added so far, in order.
    pub fn virtio_devices(&self) -> Vec<VirtioMmioSlot> {
        self.virtio.iter().map(|device| device.slot).collect()
    }

    /// The transport of virtio-mmio device `index`, for its counters.
    pub fn virtio_transport(&self, index: usize) -> Option<&Arc<MmioTransport>> {
        self.virtio.get(index).map(|device| &device.transport)
    }
}

/// How a VM run on a [`Platform`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VmOutcome {
    /// The guest powered off (ACPI S5, or a KVM shutdown system event).
    PowerOff,
    /// The guest asked for a reset (i8042 or a KVM reset system event).
    Reboot,
    /// The guest wrote `code` to the debug exit port.
    DebugExit(u32),
    /// The VMM got this signal (SIGINT, SIGTERM).
    Signal(i32),
    /// The guest reported a crash (a KVM crash system event, e.g. from pvpanic).
    GuestCrash {
        /// The vCPU that reported it.
        vcpu: u32,
    },
    /// A vCPU thread panicked: a bug in an I/O handler, a device or kvmkit. The other
    /// vCPUs were stopped.
    VcpuPanicked {
        /// The vCPU.
        vcpu: u32,
        /// The panic's message.
        message: String,
    },
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
    /// The status a debug exit code outside 1..=255 gives (0 included): a code the
    /// process status cannot carry must not read as success or as another code's
    /// truncation.
    pub const DEBUG_EXIT_OUT_OF_RANGE: i32 = 255;
    /// The status of a guest crash report.
    pub const GUEST_CRASH: i32 = 2;
    /// The status of a vCPU thread's panic (Rust's own panic status).
    pub const VCPU_PANICKED: i32 = 101;

    /// A process exit status for this outcome:
    ///
    /// | outcome | status |
    /// |---|---|
    /// | power-off, reboot | 0 |
    /// | debug exit with code 1..=255 | the code |
    /// | debug exit with any other code | [`DEBUG_EXIT_OUT_OF_RANGE`](Self::DEBUG_EXIT_OUT_OF_RANGE) (255) |
    /// | signal | 128 + the signal number |
    /// | triple fault, another vCPU exit | 1 |
    /// | guest crash | [`GUEST_CRASH`](Self::GUEST_CRASH) (2) |
    /// | vCPU panic | [`VCPU_PANICKED`](Self::VCPU_PANICKED) (101) |
    pub fn exit_status(&self) -> i32 {
        match self {
            VmOutcome::PowerOff | VmOutcome::Reboot => 0,
            VmOutcome::DebugExit(code @ 1..=255) => *code as i32,
            VmOutcome::DebugExit(_) => Self::DEBUG_EXIT_OUT_OF_RANGE,
            VmOutcome::Signal(signo) => 128 + signo,
            VmOutcome::TripleFault { .. } | VmOutcome::VcpuExit { .. } => 1,
            VmOutcome::GuestCrash { .. } => Self::GUEST_CRASH,
            VmOutcome::VcpuPanicked { .. } => Self::VCPU_PANICKED,
        }
    }
}

impl BootedMachine {
    /// Runs the machine on `platform`: one thread per vCPU and the calling thread as
    /// the I/O thread, until a device, a signal or a vCPU ends the VM. Then every vCPU
    /// is stopped and joined and the terminal restored, and one outcome returned.
    pub fn run_on(self, platform: Platform) -> Result<VmOutcome, Error> {
        self.run_on_then(platform, |_| ())
            .map(|(outcome, ())| outcome)
    }

    /// As [`run_on`](Self::run_on), and calls `at_end` with the guest RAM once the
    /// vCPUs have stopped, before it is unmapped (to report what the kernel did with
    /// it, say).
    pub fn run_on_then<R>(
        self,
        mut platform: Platform,
        at_end: impl FnOnce(&kvmkit_memory::GuestRam) -> R,
    ) -> Result<(VmOutcome, R), Error> {
        let signals = if platform.config.handle_signals {
            let blocked =
                TerminationSignals::block().map_err(Error::host("cannot block signals"))?;
            Some(Arc::new(blocked))
        } else {
            None
        };
        let vcpu_ended = Arc::new(
            EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
                .map_err(Error::host("cannot create an eventfd"))?,
        );
        let mut event_loop = platform
            .event_loop
            .take()
            .ok_or_else(|| Error::Config("the platform's event loop is gone".into()))?;
        let terminal = if platform.config.stdin_to_serial {
            let console: Arc<dyn ConsoleInput> = match &platform.console_input {
                Some(console) => Arc::clone(console),
                None => platform.serial.clone(),
            };
            event_loop
                .add_console_input(std::io::stdin(), console)
                .map_err(Error::host("cannot watch stdin"))?;
            // SAFETY: standard input is never closed by this process.
            let stdin = unsafe { BorrowedFd::borrow_raw(libc::STDIN_FILENO) };
            RawTerminal::enable(stdin)
                .map_err(Error::host("cannot put the terminal in raw mode"))?
                .map(Arc::new)
        } else {
            None
        };
        if let Some(signals) = &signals {
            event_loop
                .add_termination_signals(signals.clone(), terminal.clone())
                .map_err(Error::host("cannot watch for signals"))?;
        }
        event_loop
            .add_console_output(platform.serial.output().clone())
            .map_err(Error::host("cannot watch the serial output"))?;
        let ended = vcpu_ended.clone();
        event_loop
            .add(event_fd(&vcpu_ended), move || {
                let _ = ended.read();
                Flow::Stop
            })
            .map_err(Error::host("cannot watch the vCPU threads"))?;

        let running = self.start_notifying(Arc::new(platform.io_handler()), Some(vcpu_ended))?;
        let end = event_loop.run();
        running.stop();
        let report = at_end(running.ram());
        let vcpus = running.join_all();
        platform.serial.output().finish();
        for output in &platform.console_outputs {
            output.finish();
        }
        let end = end.map_err(Error::host("the event loop failed"))?;
        Ok((outcome(end, vcpus)?, report))
    }
}

/// One outcome from the loop's end and the vCPUs' ends: a device's or signal's
/// request wins; then a vCPU thread's panic; then a vCPU's error; then the first vCPU
/// that ended by itself, in vCPU order.
fn outcome(
    end: LoopEnd,
    vcpus: Vec<Result<VcpuOutcome, kvmkit_vcpu::Error>>,
) -> Result<VmOutcome, Error> {
    if let LoopEnd::Requested(request) = end {
        return Ok(match request {
            ShutdownReason::Reboot => VmOutcome::Reboot,
            ShutdownReason::DebugExit(code) => VmOutcome::DebugExit(code),
            ShutdownReason::Signal(signo) => VmOutcome::Signal(signo),
            _ => VmOutcome::PowerOff,
        });
    }
    let mut ended = Vec::with_capacity(vcpus.len());
    let mut failure = None;
    for result in vcpus {
        match result {
            Ok(outcome) => ended.push(outcome),
            Err(kvmkit_vcpu::Error::ThreadPanicked { vcpu, message }) => {
                return Ok(VmOutcome::VcpuPanicked { vcpu, message });
            }
            Err(error) => {
                failure.get_or_insert(error);
            }
        }
    }
    if let Some(error) = failure {
        return Err(error.into());
    }
    Ok(vcpu_outcome(&ended))
}

fn vcpu_outcome(vcpus: &[VcpuOutcome]) -> VmOutcome {
    let ended = vcpus
        .iter()
        .enumerate()
        .find_map(|(id, outcome)| match outcome {
            VcpuOutcome::Exited(exit) => Some((id as u32, exit.clone())),
            _ => None,
        });
    match ended {
        Some((vcpu, VcpuExit::Shutdown { rip })) => VmOutcome::TripleFault { vcpu, rip },
        Some((vcpu, VcpuExit::SystemEvent { kind, data })) => match kind {
            SystemEventKind::Reset => VmOutcome::Reboot,
            SystemEventKind::Shutdown => VmOutcome::PowerOff,
            SystemEventKind::Crash => VmOutcome::GuestCrash { vcpu },
            _ => VmOutcome::VcpuExit {
                vcpu,
                exit: VcpuExit::SystemEvent { kind, data },
            },
        },
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

    fn exited(exit: VcpuExit) -> Result<VcpuOutcome, kvmkit_vcpu::Error> {
        Ok(VcpuOutcome::Exited(exit))
    }

    #[test]
    fn a_device_request_wins_over_vcpu_ends() {
        let vcpus = vec![exited(VcpuExit::Shutdown { rip: 1 })];

        let result = outcome(LoopEnd::Requested(ShutdownReason::DebugExit(7)), vcpus);

        assert_eq!(result.unwrap(), VmOutcome::DebugExit(7));
    }

    #[test]
    fn a_triple_fault_names_the_vcpu_and_rip() {
        let vcpus = vec![
            Ok(VcpuOutcome::Stopped),
            exited(VcpuExit::Shutdown { rip: 0x1234 }),
        ];

        let result = outcome(LoopEnd::Stopped, vcpus).unwrap();

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
    fn a_guest_crash_report_is_its_own_outcome_with_a_failing_status() {
        let crash = VcpuExit::SystemEvent {
            kind: SystemEventKind::Crash,
            data: vec![],
        };

        let result = outcome(LoopEnd::Stopped, vec![exited(crash)]).unwrap();

        assert_eq!(result, VmOutcome::GuestCrash { vcpu: 0 });
        assert_ne!(result.exit_status(), 0);
    }

    #[test]
    fn a_vcpu_panic_is_an_outcome_not_an_error() {
        let vcpus = vec![
            Ok(VcpuOutcome::Stopped),
            Err(kvmkit_vcpu::Error::ThreadPanicked {
                vcpu: 1,
                message: "device bug".into(),
            }),
        ];

        let result = outcome(LoopEnd::Stopped, vcpus).unwrap();

        assert_eq!(
            result,
            VmOutcome::VcpuPanicked {
                vcpu: 1,
                message: "device bug".into()
            }
        );
        assert_eq!(result.exit_status(), VmOutcome::VCPU_PANICKED);
    }

    #[test]
    fn the_boot_crates_default_legacy_devices_are_where_the_platform_puts_them() {
        assert_eq!(
            Platform::legacy_devices(),
            kvmkit_boot::LegacyDevices::default()
        );
    }

    #[test]
    fn exit_status_of_a_signal_follows_the_shell_convention() {
        assert_eq!(VmOutcome::Signal(libc::SIGTERM).exit_status(), 143);
        assert_eq!(VmOutcome::DebugExit(3).exit_status(), 3);
    }

    #[test]
    fn debug_exit_codes_outside_1_to_255_never_read_as_success_or_wrap() {
        for code in [0, 256, 512, 0x8000_0000, u32::MAX] {
            assert_eq!(
                VmOutcome::DebugExit(code).exit_status(),
                VmOutcome::DEBUG_EXIT_OUT_OF_RANGE,
                "{code:#x}"
            );
        }
        assert_eq!(VmOutcome::DebugExit(255).exit_status(), 255);
        assert_eq!(VmOutcome::DebugExit(1).exit_status(), 1);
    }
}
