// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The bus holds no lock across a device access: an access to one device completes
//! while another device is still busy with its own.

use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use kvmkit_devices::{AddressSpace, Bus, BusDevice};

/// A rendezvous that one device waits at and another opens.
#[derive(Default)]
struct Gate {
    /// (the waiter is inside its access, the gate is open)
    state: Mutex<(bool, bool)>,
    changed: Condvar,
}

/// Waits, inside its write, for the gate to open; records whether it did in time.
struct Waiter {
    gate: Arc<Gate>,
    saw_other_device: Mutex<Option<bool>>,
}

impl BusDevice for Waiter {
    fn read(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&self, _offset: u64, _data: &[u8]) {
        let mut state = self.gate.state.lock().unwrap();
        state.0 = true;
        self.gate.changed.notify_all();
        let (state, _) = self
            .gate
            .changed
            .wait_timeout_while(state, Duration::from_secs(10), |state| !state.1)
            .unwrap();
        *self.saw_other_device.lock().unwrap() = Some(state.1);
    }
}

/// Opens the gate in its write.
struct Opener {
    gate: Arc<Gate>,
}

impl BusDevice for Opener {
    fn read(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&self, _offset: u64, _data: &[u8]) {
        self.gate.state.lock().unwrap().1 = true;
        self.gate.changed.notify_all();
    }
}

#[test]
fn access_to_one_device_completes_while_another_device_is_busy() {
    let gate = Arc::new(Gate::default());
    let waiter = Arc::new(Waiter {
        gate: gate.clone(),
        saw_other_device: Mutex::new(None),
    });
    let bus = Arc::new(Bus::new(AddressSpace::Pio));
    bus.insert(0x510, 1, "waiter", waiter.clone()).unwrap();
    bus.insert(0x520, 1, "opener", Arc::new(Opener { gate: gate.clone() }))
        .unwrap();

    let busy_bus = bus.clone();
    let busy = thread::spawn(move || busy_bus.write(0x510, &[1]));
    // Only once the waiter is inside its access does the other access start.
    drop(
        gate.changed
            .wait_while(gate.state.lock().unwrap(), |state| !state.0)
            .unwrap(),
    );
    bus.write(0x520, &[1]);
    busy.join().unwrap();

    assert_eq!(*waiter.saw_other_device.lock().unwrap(), Some(true));
}
