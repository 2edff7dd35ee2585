// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A port that ends the VM with an exit code the guest chooses (like QEMU's
//! isa-debug-exit): what test guests use to report pass or fail.

use std::sync::Arc;

use crate::{BusDevice, ExitRequest, VmExit};

/// The usual port, as QEMU's isa-debug-exit.
pub const DEBUG_EXIT_PORT: u64 = 0xf4;
/// The port's width: the guest writes 1, 2 or 4 bytes.
pub const DEBUG_EXIT_PORT_LEN: u64 = 4;

/// Writing `code` here ends the VM with [`ExitRequest::DebugExit`]`(code)`.
#[derive(Debug)]
pub struct DebugExit {
    exit: Arc<VmExit>,
}

impl DebugExit {
    /// A debug exit port reporting to `exit`.
    pub fn new(exit: Arc<VmExit>) -> Self {
        DebugExit { exit }
    }
}

impl BusDevice for DebugExit {
    fn read(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        if offset != 0 {
            return;
        }
        let mut bytes = [0u8; 4];
        let len = data.len().min(4);
        bytes[..len].copy_from_slice(&data[..len]);
        self.exit
            .request(ExitRequest::DebugExit(u32::from_le_bytes(bytes)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_value_becomes_the_exit_code() {
        let exit = Arc::new(VmExit::new().unwrap());
        let dev = DebugExit::new(exit.clone());

        dev.write(0, &[0x2a, 0x01]);

        assert_eq!(exit.get(), Some(ExitRequest::DebugExit(0x12a)));
    }
}
