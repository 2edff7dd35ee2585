// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A port that ends the VM with an exit code the guest chooses (like QEMU's
//! isa-debug-exit): what test guests use to report pass or fail.

use std::sync::Arc;

use crate::{BusDevice, ShutdownReason, VmShutdown};

/// The usual port, as QEMU's isa-debug-exit.
pub const DEBUG_EXIT_PORT: u64 = 0xf4;
/// The port's width: the guest writes 1, 2 or 4 bytes.
pub const DEBUG_EXIT_PORT_LEN: u64 = 4;

/// Writing `code` here ends the VM with [`ShutdownReason::DebugExit`]`(code)`: the
/// bytes written, little-endian (a 1-, 2- or 4-byte write). A write at another offset
/// of the port's window, or of no bytes, is ignored.
#[derive(Debug)]
pub struct DebugExit {
    exit: Arc<VmShutdown>,
}

impl DebugExit {
    /// A debug exit port reporting to `exit`.
    pub fn new(exit: Arc<VmShutdown>) -> Self {
        DebugExit { exit }
    }
}

impl BusDevice for DebugExit {
    fn read(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        if offset != 0 || data.is_empty() {
            return;
        }
        let mut bytes = [0u8; 4];
        let len = data.len().min(4);
        bytes[..len].copy_from_slice(&data[..len]);
        self.exit
            .request(ShutdownReason::DebugExit(u32::from_le_bytes(bytes)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_value_becomes_the_exit_code() {
        let exit = Arc::new(VmShutdown::new().unwrap());
        let dev = DebugExit::new(exit.clone());

        dev.write(0, &[0x2a, 0x01]);

        assert_eq!(exit.get(), Some(ShutdownReason::DebugExit(0x12a)));
    }

    #[test]
    fn a_write_of_no_bytes_requests_nothing() {
        let exit = Arc::new(VmShutdown::new().unwrap());
        let dev = DebugExit::new(exit.clone());

        dev.write(0, &[]);

        assert_eq!(exit.get(), None);
    }
}
