// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The i8042 keyboard controller, as far as a VM needs it: the reset line.

use std::sync::{Arc, Mutex};

use crate::{reply_byte, BusDevice, ShutdownReason, VmShutdown};

/// The data port.
pub const I8042_DATA_PORT: u64 = 0x60;
/// The command/status port.
pub const I8042_COMMAND_PORT: u64 = 0x64;

const CMD_READ_COMMAND_BYTE: u8 = 0x20;
const CMD_WRITE_COMMAND_BYTE: u8 = 0x60;
const CMD_SELF_TEST: u8 = 0xaa;
/// The command that pulses the reset line: what a guest writes to
/// [`I8042_COMMAND_PORT`] to reboot.
pub const I8042_PULSE_RESET: u8 = 0xfe;
const SELF_TEST_PASSED: u8 = 0x55;
/// Status bit 0: the output buffer holds a byte for the guest.
const STATUS_OUTPUT_FULL: u8 = 0x01;
/// Status bit 2: the system flag, set after a successful self test.
const STATUS_SYSTEM_FLAG: u8 = 0x04;

#[derive(Debug, Default)]
struct State {
    command_byte: u8,
    output: Option<u8>,
    awaiting_command_byte: bool,
}

/// An i8042 with no keyboard: self test, the command byte, and reset (command 0xFE
/// on port 0x64), which ends the VM with [`ShutdownReason::Reboot`].
///
/// It serves two one-byte ports; register it once at [`I8042_DATA_PORT`] with
/// length 5 so that offset 0 is the data port and offset 4 the command port.
#[derive(Debug)]
pub struct I8042 {
    state: Mutex<State>,
    exit: Arc<VmShutdown>,
}

impl I8042 {
    /// A controller that reports resets to `exit`.
    pub fn new(exit: Arc<VmShutdown>) -> Self {
        I8042 {
            state: Mutex::new(State::default()),
            exit,
        }
    }
}

impl BusDevice for I8042 {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let value = match offset {
            0 => state.output.take().unwrap_or(0),
            4 => {
                let full = if state.output.is_some() {
                    STATUS_OUTPUT_FULL
                } else {
                    0
                };
                STATUS_SYSTEM_FLAG | full
            }
            _ => 0xff,
        };
        reply_byte(data, value);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match offset {
            0 if state.awaiting_command_byte => {
                state.command_byte = value;
                state.awaiting_command_byte = false;
            }
            4 => match value {
                CMD_READ_COMMAND_BYTE => state.output = Some(state.command_byte),
                CMD_WRITE_COMMAND_BYTE => state.awaiting_command_byte = true,
                CMD_SELF_TEST => state.output = Some(SELF_TEST_PASSED),
                I8042_PULSE_RESET => self.exit.request(ShutdownReason::Reboot),
                _ => {}
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(dev: &I8042, offset: u64) -> u8 {
        let mut data = [0u8];
        dev.read(offset, &mut data);
        data[0]
    }

    #[test]
    fn reset_command_requests_a_reboot() {
        let exit = Arc::new(VmShutdown::new().unwrap());
        let dev = I8042::new(exit.clone());

        dev.write(4, &[I8042_PULSE_RESET]);

        assert_eq!(exit.get(), Some(ShutdownReason::Reboot));
    }

    #[test]
    fn self_test_answers_0x55_through_the_output_buffer() {
        let dev = I8042::new(Arc::new(VmShutdown::new().unwrap()));

        dev.write(4, &[CMD_SELF_TEST]);

        assert_eq!(read(&dev, 4) & STATUS_OUTPUT_FULL, STATUS_OUTPUT_FULL);
        assert_eq!(read(&dev, 0), SELF_TEST_PASSED);
        assert_eq!(read(&dev, 4) & STATUS_OUTPUT_FULL, 0);
    }

    #[test]
    fn command_byte_round_trips() {
        let dev = I8042::new(Arc::new(VmShutdown::new().unwrap()));

        dev.write(4, &[CMD_WRITE_COMMAND_BYTE]);
        dev.write(0, &[0x47]);
        dev.write(4, &[CMD_READ_COMMAND_BYTE]);

        assert_eq!(read(&dev, 0), 0x47);
    }
}
