// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The 16550A UART on COM1, on vm-superio's emulation.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use vm_superio::serial::NoEvents;
use vm_superio::Serial;

use crate::interrupt::SuperioTrigger;
use crate::{reply_byte, BusDevice, Interrupt};

/// COM1's base port.
pub const COM1_PORT: u64 = 0x3f8;
/// COM1's interrupt line.
pub const COM1_IRQ: u32 = 4;
/// The UART's register window.
pub const SERIAL_PORT_LEN: u64 = 8;

/// Where the guest's serial output goes.
pub enum SerialOutput {
    /// The VMM's standard output.
    Stdout,
    /// Discarded.
    Sink,
    /// Any writer: a file, a socket, a [`SharedBuffer`].
    Writer(Box<dyn Write + Send>),
}

impl SerialOutput {
    fn into_writer(self) -> Box<dyn Write + Send> {
        match self {
            SerialOutput::Stdout => Box::new(io::stdout()),
            SerialOutput::Sink => Box::new(io::sink()),
            SerialOutput::Writer(writer) => writer,
        }
    }
}

/// A writer that collects bytes for another thread to read, e.g. a test.
#[derive(Debug, Clone, Default)]
pub struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    /// A copy of everything written so far.
    pub fn contents(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A 16550A UART: transmit to a [`SerialOutput`], receive what the VMM enqueues, with
/// interrupts on received data and on an empty transmit register.
pub struct SerialPort {
    uart: Mutex<Serial<SuperioTrigger, NoEvents, Box<dyn Write + Send>>>,
}

impl SerialPort {
    /// A UART raising `interrupt` and writing to `output`.
    pub fn new(interrupt: Arc<dyn Interrupt>, output: SerialOutput) -> Self {
        SerialPort {
            uart: Mutex::new(Serial::new(SuperioTrigger(interrupt), output.into_writer())),
        }
    }

    fn uart(
        &self,
    ) -> std::sync::MutexGuard<'_, Serial<SuperioTrigger, NoEvents, Box<dyn Write + Send>>> {
        self.uart.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `input` for the guest to receive, raising the receive interrupt if the
    /// guest enabled it. Returns how many bytes fit in the receive FIFO.
    pub fn enqueue_input(&self, input: &[u8]) -> io::Result<usize> {
        self.uart()
            .enqueue_raw_bytes(input)
            .map_err(|e| io::Error::other(format!("serial input: {e:?}")))
    }

    /// Free room in the receive FIFO.
    pub fn input_room(&self) -> usize {
        self.uart().fifo_capacity()
    }
}

impl BusDevice for SerialPort {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let value = self.uart().read(offset as u8);
        reply_byte(data, value);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        if let Some(&value) = data.first() {
            let mut uart = self.uart();
            // A failed interrupt or a closed output must not stop the guest; the byte
            // is lost as on a disconnected line.
            let _ = uart.write(offset as u8, value);
            if offset == 0 {
                let _ = uart.writer_mut().flush();
            }
        }
    }
}
