// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The 16550A UART on COM1, on vm-superio's emulation.
//!
//! Nothing the guest does with the UART can block the VMM: transmitted bytes go into a
//! [`ConsoleOutput`] on the vCPU thread and reach the real output from the I/O thread
//! with non-blocking writes; received bytes are only taken from the host while the
//! receive FIFO has room ([`SerialPort::input_room`]), and the port says when it has
//! room again ([`SerialPort::input_ready`]).

use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use vm_superio::serial::{SerialEvents, SerialState};
use vm_superio::Serial;
use vmm_sys_util::eventfd::EventFd;

use crate::interrupt::SuperioTrigger;
use crate::{reply_byte, BusDevice, ConsoleInput, ConsoleOutput, Interrupt, SerialOutput};

/// COM1's base port.
pub const COM1_PORT: u64 = 0x3f8;
/// COM1's interrupt line.
pub const COM1_IRQ: u32 = 4;
/// The UART's register window.
pub const SERIAL_PORT_LEN: u64 = 8;

/// The modem control register's offset, and its loopback bit.
const MCR_OFFSET: u8 = 4;
const MCR_LOOP: u8 = 0x10;

/// vm-superio's events: the receive FIFO ran empty, so input can flow again.
struct InputEvents(Arc<EventFd>);

impl SerialEvents for InputEvents {
    fn buffer_read(&self) {}
    fn out_byte(&self) {}
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {
        let _ = self.0.write(1);
    }
}

/// vm-superio's output writer: the console output queue, which never blocks.
struct OutputWriter(Arc<ConsoleOutput>);

impl Write for OutputWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.push(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

type Uart = Serial<SuperioTrigger, InputEvents, OutputWriter>;

/// A UART's registers and receive FIFO: what a snapshot saves of COM1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UartState {
    baud_divisor: [u8; 2],
    interrupt_enable: u8,
    interrupt_identification: u8,
    line_control: u8,
    line_status: u8,
    modem_control: u8,
    modem_status: u8,
    scratch: u8,
    received: Vec<u8>,
}

impl From<SerialState> for UartState {
    fn from(state: SerialState) -> Self {
        UartState {
            baud_divisor: [state.baud_divisor_low, state.baud_divisor_high],
            interrupt_enable: state.interrupt_enable,
            interrupt_identification: state.interrupt_identification,
            line_control: state.line_control,
            line_status: state.line_status,
            modem_control: state.modem_control,
            modem_status: state.modem_status,
            scratch: state.scratch,
            received: state.in_buffer,
        }
    }
}

impl From<&UartState> for SerialState {
    fn from(state: &UartState) -> Self {
        SerialState {
            baud_divisor_low: state.baud_divisor[0],
            baud_divisor_high: state.baud_divisor[1],
            interrupt_enable: state.interrupt_enable,
            interrupt_identification: state.interrupt_identification,
            line_control: state.line_control,
            line_status: state.line_status,
            modem_control: state.modem_control,
            modem_status: state.modem_status,
            scratch: state.scratch,
            in_buffer: state.received.clone(),
        }
    }
}

/// A 16550A UART: transmit to a [`SerialOutput`], receive what the VMM enqueues, with
/// interrupts on received data and on an empty transmit register.
pub struct SerialPort {
    uart: Mutex<Uart>,
    output: Arc<ConsoleOutput>,
    input_ready: Arc<EventFd>,
}

impl SerialPort {
    /// A UART raising `interrupt` and writing to `output`.
    pub fn new(interrupt: Arc<dyn Interrupt>, output: SerialOutput) -> io::Result<Self> {
        let output = Arc::new(ConsoleOutput::new(output)?);
        let input_ready = Arc::new(EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?);
        let uart = Serial::with_events(
            SuperioTrigger(interrupt),
            InputEvents(Arc::clone(&input_ready)),
            OutputWriter(Arc::clone(&output)),
        );
        Ok(SerialPort {
            uart: Mutex::new(uart),
            output,
            input_ready,
        })
    }

    fn uart(&self) -> MutexGuard<'_, Uart> {
        self.uart.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `input` for the guest to receive, raising the receive interrupt if the
    /// guest enabled it. Returns how many bytes the receive FIFO took: none while it is
    /// full or while the guest has the UART in loopback mode (see
    /// [`input_room`](Self::input_room)).
    pub fn enqueue_input(&self, input: &[u8]) -> io::Result<usize> {
        let mut uart = self.uart();
        if input.is_empty() || room(&mut uart) == 0 {
            return Ok(0);
        }
        uart.enqueue_raw_bytes(input)
            .map_err(|e| io::Error::other(format!("serial input: {e:?}")))
    }

    /// How many bytes [`enqueue_input`](Self::enqueue_input) takes now: the free room
    /// in the receive FIFO, or 0 while the UART is in loopback mode (it then receives
    /// its own output, not the host's input).
    pub fn input_room(&self) -> usize {
        room(&mut self.uart())
    }

    /// Readable when the guest made room for input (it emptied the receive FIFO or left
    /// loopback mode): an I/O thread that stopped reading the host's input while
    /// [`input_room`](Self::input_room) was 0 starts again then. Read it to re-arm.
    pub fn input_ready(&self) -> &EventFd {
        &self.input_ready
    }

    /// Where transmitted bytes go: flush it on the I/O thread.
    pub fn output(&self) -> &Arc<ConsoleOutput> {
        &self.output
    }

    /// The UART's registers and receive FIFO.
    pub fn save_state(&self) -> UartState {
        self.uart().state().into()
    }

    /// Sets the registers and receive FIFO to `state` (saved by
    /// [`save_state`](Self::save_state)); a FIFO longer than the UART's is refused,
    /// and the UART left as it was.
    pub fn restore_state(&self, state: &UartState) -> io::Result<()> {
        let mut uart = self.uart();
        let trigger = SuperioTrigger(Arc::clone(&uart.interrupt_evt().0));
        let restored = Serial::from_state(
            &state.into(),
            trigger,
            InputEvents(Arc::clone(&self.input_ready)),
            OutputWriter(Arc::clone(&self.output)),
        )
        .map_err(|e| io::Error::other(format!("serial state: {e:?}")))?;
        *uart = restored;
        Ok(())
    }
}

impl ConsoleInput for SerialPort {
    fn input_room(&self) -> usize {
        SerialPort::input_room(self)
    }

    fn enqueue_input(&self, input: &[u8]) -> io::Result<usize> {
        SerialPort::enqueue_input(self, input)
    }

    fn input_ready(&self) -> &EventFd {
        SerialPort::input_ready(self)
    }
}

fn room(uart: &mut Uart) -> usize {
    if uart.read(MCR_OFFSET) & MCR_LOOP != 0 {
        0
    } else {
        uart.fifo_capacity()
    }
}

impl BusDevice for SerialPort {
    fn read(&self, offset: u64, data: &mut [u8]) {
        // The bus hands offsets inside the 8-byte window.
        let Ok(offset) = u8::try_from(offset) else {
            return reply_byte(data, 0xff);
        };
        let value = self.uart().read(offset);
        reply_byte(data, value);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let (Some(&value), Ok(offset)) = (data.first(), u8::try_from(offset)) else {
            return;
        };
        let mut uart = self.uart();
        // A failed interrupt must not stop the guest; output goes to the queue, which
        // never fails.
        let _ = uart.write(offset, value);
        if offset == MCR_OFFSET && room(&mut uart) > 0 {
            // Leaving loopback mode lets input flow again.
            let _ = self.input_ready.write(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventFdInterrupt, FlushState, OUTPUT_QUEUE_BYTES};
    use std::fs::File;
    use std::os::fd::FromRawFd;

    const THR: u64 = 0;
    const RBR: u64 = 0;

    fn pipe() -> (File, File) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe returns.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both descriptors were just created and are owned from here on.
        unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
    }

    fn port(output: SerialOutput) -> SerialPort {
        SerialPort::new(Arc::new(EventFdInterrupt::new().unwrap()), output).unwrap()
    }

    #[test]
    fn a_uarts_registers_and_fifo_restored_into_another_read_back_the_same() {
        let saved = port(SerialOutput::Sink);
        // Line control 0x03 (8N1), interrupts on received data, scratch 0x5a, and two
        // bytes waiting in the receive FIFO.
        saved.write(3, &[0x03]);
        saved.write(1, &[0x01]);
        saved.write(7, &[0x5a]);
        saved.enqueue_input(b"hi").unwrap();
        let state = saved.save_state();
        let restored = port(SerialOutput::Sink);

        restored.restore_state(&state).unwrap();

        assert_eq!(restored.save_state(), state);
        let mut byte = [0u8];
        restored.read(7, &mut byte);
        assert_eq!(byte[0], 0x5a);
        restored.read(RBR, &mut byte);
        assert_eq!(byte[0], b'h');
    }

    #[test]
    fn a_uart_state_with_a_fifo_too_long_is_refused_and_the_uart_kept() {
        let serial = port(SerialOutput::Sink);
        serial.write(7, &[0x11]);
        let mut state = serial.save_state();
        state.received = vec![b'x'; 1000];

        let result = serial.restore_state(&state);

        assert!(result.is_err());
        let mut byte = [0u8];
        serial.read(7, &mut byte);
        assert_eq!(byte[0], 0x11);
    }

    #[test]
    fn a_guest_printing_into_a_full_pipe_never_blocks_the_vcpu() {
        let (_reader, writer) = pipe();
        let serial = port(SerialOutput::File(writer));

        // Far more than a pipe holds (64 KiB) and than the queue holds: without the
        // queue, the first write past the pipe's capacity would block this thread.
        for _ in 0..(OUTPUT_QUEUE_BYTES + 200_000) {
            serial.write(THR, b"x");
        }
        let first = serial.output().flush();

        assert_eq!(first, FlushState::Blocked);
        assert_eq!(serial.output().dropped(), 200_000);
    }

    #[test]
    fn queued_output_reaches_the_reader_when_flushed() {
        let (mut reader, writer) = pipe();
        let serial = port(SerialOutput::File(writer));

        for byte in b"hello" {
            serial.write(THR, &[*byte]);
        }
        let ready = serial.output().ready().read().unwrap();
        let state = serial.output().flush();

        let mut text = [0u8; 5];
        std::io::Read::read_exact(&mut reader, &mut text).unwrap();
        assert_eq!(ready, 1, "one wake-up for bytes arriving in an empty queue");
        assert_eq!(state, FlushState::Done);
        assert_eq!(&text, b"hello");
    }

    #[test]
    fn a_reader_that_went_away_makes_output_dropped_not_an_error() {
        let (reader, writer) = pipe();
        let serial = port(SerialOutput::File(writer));
        drop(reader);

        serial.write(THR, b"a");
        let state = serial.output().flush();
        serial.write(THR, b"b");
        serial.output().flush();

        assert_eq!(state, FlushState::Closed);
        assert_eq!(serial.output().dropped(), 2);
    }

    #[test]
    fn loopback_mode_takes_no_input_and_leaving_it_signals_room() {
        let serial = port(SerialOutput::Sink);

        serial.write(u64::from(MCR_OFFSET), &[MCR_LOOP]);
        let in_loopback = (serial.input_room(), serial.enqueue_input(b"abc").unwrap());
        serial.write(u64::from(MCR_OFFSET), &[0]);

        assert_eq!(in_loopback, (0, 0));
        assert_eq!(serial.input_room(), 64);
        assert_eq!(serial.input_ready().read().unwrap(), 1);
        assert_eq!(serial.enqueue_input(b"abc").unwrap(), 3);
    }

    #[test]
    fn draining_the_receive_fifo_signals_input_ready() {
        let serial = port(SerialOutput::Sink);
        serial.enqueue_input(b"ab").unwrap();

        let mut data = [0u8];
        serial.read(RBR, &mut data);
        let after_one = serial.input_ready().read().is_ok();
        serial.read(RBR, &mut data);

        assert!(!after_one, "the FIFO still holds a byte");
        assert_eq!(serial.input_ready().read().unwrap(), 1);
    }
}
